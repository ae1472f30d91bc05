"""An srun step as a launcher: `srun python tools/train.py ...` forms one job.

torchvision's references/classification read SLURM_PROCID for the rank but take the
world size and the address from the user; here the step says all of it. The step's
task id, task count and local id give rank, world size and local rank; the address
is the step's first node (where task 0 runs), the port a function of the job id.
They are exported as torchrun would export them, so everything downstream (the
env:// rendezvous, "rank 0 speaks") sees one launcher's variables.

Only a real srun step counts. A plain `python tools/train.py` in an sbatch or salloc
shell has SLURM_PROCID=0 and SLURM_NTASKS of the whole allocation, but no
SLURM_STEP_ID (or the batch/extern/interactive step's): it stays one process and
never waits for ranks that are not coming. Under torchrun (started by srun or not)
torchrun's RANK wins.
"""
import os
import re
import subprocess

# slurm.h's ids of the steps that are not srun steps: the batch script, the extern
# step (PrologFlags=contain), the interactive step (salloc's use_interactive_step), pending.
NOT_SRUN_STEPS = {"batch", "extern", "interactive", "pending",
                  str(0xfffffffb), str(0xfffffffc), str(0xfffffffa), str(0xfffffffd)}
PORT_BASE, PORT_SPAN = 20000, 10000     # below Linux's ephemeral ports (32768 on)


def srun_step(environ):
    """(rank, world, local rank, local world, first node) of an srun step of 2 or more tasks,
    or None: outside SLURM, under torchrun, in a batch/salloc shell, or a one-task step."""
    if "RANK" in environ:                                    # torchrun (or the user) decided
        return None
    step = environ.get("SLURM_STEP_ID", environ.get("SLURM_STEPID"))
    if step is None or step.strip().lower() in NOT_SRUN_STEPS:
        return None
    world = int(environ.get("SLURM_STEP_NUM_TASKS", environ.get("SLURM_NTASKS", "1")))
    if world < 2:
        return None
    node_id = int(environ.get("SLURM_NODEID", "0"))
    per_node = environ.get("SLURM_STEP_TASKS_PER_NODE", environ.get("SLURM_TASKS_PER_NODE", ""))
    local_world = tasks_on_node(per_node, node_id) if per_node else 1
    nodes = environ.get("SLURM_STEP_NODELIST", environ.get("SLURM_JOB_NODELIST", ""))
    return (int(environ["SLURM_PROCID"]), world, int(environ.get("SLURM_LOCALID", "0")), local_world,
            first_host(nodes) if nodes else "127.0.0.1")


def tasks_on_node(spec, node_id):
    """The task count of node `node_id` from SLURM's "2(x3),1" notation."""
    counts = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if m is None:
            return 1
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node_id] if node_id < len(counts) else 1


def first_host(nodelist):
    """The first node name of a compressed node list: "gpu[07-09,12],cpu01" -> "gpu07"."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    first = nodelist[:end]
    m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", first)
    if m is None:
        return first
    prefix, ranges, suffix = m.groups()
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def job_port(job_id):
    """The port of a job's rendezvous, the same on every node; tools/slurm/train.sbatch
    derives its own the same way."""
    return PORT_BASE + int(job_id) % PORT_SPAN


def node_address(node):
    """The address of a SLURM node, which need not be a host name (NodeAddr); the name itself
    where scontrol cannot tell."""
    try:
        out = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return node
    m = re.search(r"\bNodeAddr=(\S+)", out)
    return m.group(1) if m else node


def adopt_srun_step(environ=None, address=node_address):
    """Inside an srun step (see `srun_step`), export RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE and, unless set, MASTER_ADDR and MASTER_PORT, as torchrun does.
    Returns True when it did."""
    environ = os.environ if environ is None else environ
    step = srun_step(environ)
    if step is None:
        return False
    rank, world, local_rank, local_world, node = step
    environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank),
                   LOCAL_WORLD_SIZE=str(local_world))
    if "MASTER_ADDR" not in environ:
        environ["MASTER_ADDR"] = address(node)
    environ.setdefault("MASTER_PORT", str(job_port(environ.get("SLURM_JOB_ID", "0"))))
    return True


def cpus_per_rank(environ, local_world):
    """CPU threads for each of a node's ranks: SLURM's CPUs on this node where it says,
    else the machine's, shared by the node's ranks."""
    cpus = environ.get("SLURM_CPUS_ON_NODE")
    total = int(cpus) if cpus and cpus.isdigit() else (os.cpu_count() or 1)
    return max(1, total // max(1, local_world))

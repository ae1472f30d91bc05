"""Many pairs: k data-parallel replicas of the column pair at 2k ranks.

Rank r holds column r % 2 of replica r // 2. Two kinds of process group join them:
the pair (the two columns of one replica, for the exchange of activations, §3.2)
and the same-column group (column c of every replica, for averaging gradients).

Data parallelism is torch's own: `apply_data_parallel` wraps a rank's `ColumnNet`
in `DistributedDataParallel` over its same-column group, which averages each
bucket of gradients while backward is still computing the layers below it. DDP
takes one process group per module, which fits because every parameter of a
`ColumnNet` belongs to exactly one column (fc8 is split as in Figure 2). With one
replica there is nothing to average and the model stays as it is.

BatchNorm (ModelConfig.batch_norm, opt-in) normalises each replica's batch by its own
statistics (no SyncBatchNorm: a batch of 128 per replica is what the networks it came
with used). Its running statistics are buffers, which DDP keeps in step its default way
(`broadcast_buffers`): at every training forward replica 0's are copied to the other
replicas of the same-column group, before each updates its own from its batch. So they
differ between replicas only by the last step's update, and a checkpoint, which gathers
replica 0's, resumes exactly: the first forward after it broadcasts them as an
uninterrupted run's would.
"""
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from alexnet_mp.errors import LaunchError
from alexnet_mp.model.arch import COLUMNS


def check_world(world):
    """Two ranks per replica, one per column (§3.2): any other world size cannot be paired."""
    if world % COLUMNS:
        raise LaunchError(f"world size {world} is not a multiple of 2: the two columns need 2 ranks per replica "
                          f"(launch with --nproc_per_node=2, or an even total)")


class Topology:
    """Where this rank sits among the ranks of an initialised process group, and the
    groups it talks to: `pair` (its replica's two columns) and `column_group` (its
    column in every replica; None with one replica). Every rank must build it at the
    same point: `new_group` is collective, and every rank creates every group, in the
    same order, as torch.distributed requires. `timeout`: the groups' collective timeout
    (a new group does not take the world's; None: torch's default)."""

    def __init__(self, timeout=None):
        world, rank = dist.get_world_size(), dist.get_rank()
        check_world(world)
        self.rank, self.world = rank, world
        self.column, self.replica, self.replicas = rank % COLUMNS, rank // COLUMNS, world // COLUMNS
        pairs = [dist.new_group([COLUMNS * r + c for c in range(COLUMNS)], timeout=timeout)
                 for r in range(self.replicas)]
        self.pair = pairs[self.replica]
        self.column_group = None
        if self.replicas > 1:
            same_column = [dist.new_group(list(range(c, world, COLUMNS)), timeout=timeout) for c in range(COLUMNS)]
            self.column_group = same_column[self.column]


def apply_data_parallel(net, topology, **ddp_options):
    """`net` wrapped in DDP over its same-column group, or `net` itself with one replica
    (or outside torch.distributed: topology None). Forward and backward through the
    result; checkpoints through `net`, which DDP leaves in place as `.module`.

    DDP starts by broadcasting replica 0's weights to the other replicas. Its first
    step all-reduces one bucket after backward; then it rebuilds its buckets in the
    order that backward produced the gradients, each closed once past its cap (1 MB for
    the first, 25 MB after): fc8 (8 MB of a column's at 1000 classes), fc7 (34 MB),
    fc6 (76 MB), the convs (5 MB). From the second step on, every bucket but the convs'
    (96% of the bytes) is on the wire before conv1's backward ends (tests/test_parallel.py).
    `ddp_options` go to DistributedDataParallel (the benchmark and tests set bucket sizes).
    """
    if topology is None or topology.replicas == 1:
        return net
    device = next(net.parameters()).device
    return DistributedDataParallel(
        net, device_ids=[device] if device.type == "cuda" else None,
        process_group=topology.column_group,
        # Gradients live in the buckets: no second copy of a column's 30 M floats. The paper's
        # network has no buffers; BatchNorm's running statistics follow replica 0 (module docstring).
        **{"gradient_as_bucket_view": True, **ddp_options})


def broadcast_from_first_replica(net, topology):
    """Give every replica replica 0's weights and buffers (for weights drawn from per-process generators)."""
    if topology.column_group is None:
        return
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            dist.broadcast(t, group=topology.column_group, group_src=0)

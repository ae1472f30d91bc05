"""The benchmark's `scaling` section: the rank placement with 1 pair (2 processes) and
2 pairs (4 processes), each training step split into compute, the exchange between
the columns, and the data-parallel communication that backward did not hide.

Every process runs the same steps twice over, interleaved: with DDP's all-reduce, and
with DDP's communication hook swapped for one that returns the local gradients
unreduced. The difference is the exposed data-parallel time. The exchange's time is
measured around its collectives (on the pair's group), waiting for the other column
included. Compute is what remains. Always gloo processes on the CPU.
"""
import os
import socket
import statistics
import tempfile
import time

import torch

PAIRS = (1, 2)


class _Clock:
    """Seconds spent in collectives on one process group, per timed call."""

    def __init__(self, group):
        self.group, self.total = group, 0.0

    def wrap(self, real):
        def timed(*args, **kwargs):
            if kwargs.get("group") is not self.group:
                return real(*args, **kwargs)
            t = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - t
        return timed


def _switchable_allreduce(state, bucket):
    """DDP's own all-reduce while state["on"], else the local gradients as they are."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    if state["on"]:
        return default_hooks.allreduce_hook(state["group"], bucket)
    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut


def _worker(rank, world, port, batch, steps, repeats, classes, path):
    import torch.distributed as dist

    from alexnet_mp import rank_alexnet
    from alexnet_mp.cli.benchmark import _batch, model_steps, timed
    from alexnet_mp.optim import PaperSGD, param_groups
    from alexnet_mp.parallel import Topology, apply_data_parallel
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    topology = Topology()
    net = rank_alexnet("cpu", classes, seed=0, topology=topology)
    model = apply_data_parallel(net, topology)
    hook = {"on": True, "group": topology.column_group}
    if model is not net:
        model.register_comm_hook(hook, _switchable_allreduce)
    clock = _Clock(topology.pair)
    for name in ("all_gather", "all_reduce", "reduce_scatter_single"):
        setattr(dist, name, clock.wrap(getattr(dist, name)))
    x, y = _batch(batch, torch.device("cpu"), classes=classes)
    train, _ = model_steps(model, PaperSGD(param_groups(net, 5e-4), lr=1e-4), x, y, steps)
    exchange = {True: [], False: []}

    def variant(on):
        def run():
            hook["on"], clock.total = on, 0.0
            train()
            exchange[on].append(clock.total / steps)
        return run
    variants = [variant(True), variant(False)] if model is not net else [variant(True)]
    times = timed(variants, repeats, warmup=2)     # the second step runs on rebuilt buckets
    quiet = exchange[model is net]          # the exchange's time in the steps without DP's all-reduce
    result = {"step": times[0][0] / steps, "spread": (times[0][1] / steps, times[0][2] / steps),
              "no_dp": times[-1][0] / steps, "exchange": statistics.median(quiet)}
    if model is not net:
        flat = torch.zeros(sum(p.numel() for p in net.parameters()))
        result["allreduce_alone"] = timed([lambda: dist.all_reduce(flat, group=topology.column_group)], repeats)[0][0]
    if rank == 0:
        torch.save(result, path)
    dist.destroy_process_group()


def bench_scaling(args):
    """{pairs: figures} for 1 and 2 pairs; seconds per step, on rank 0."""
    import torch.multiprocessing as mp
    classes = 10 if args.quick else 1000
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for pairs in PAIRS:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            path = os.path.join(d, f"{pairs}.pt")
            mp.spawn(_worker, args=(2 * pairs, port, args.batch_size, args.steps, args.repeats, classes, path),
                     nprocs=2 * pairs, join=True)
            out[pairs] = torch.load(path, weights_only=True)
    return out


def report_scaling(args, device, res):
    figures = bench_scaling(args)
    cores = os.cpu_count() or 1
    rows = {}
    print(f"\n(g) scaling, rank placement, gloo processes on the CPU, batch {args.batch_size} per pair "
          f"(INDICATIVE: the processes share this machine's {cores} cores; network links would differ)")
    print(f"    {'':18}{'step ms':>10}{'compute':>10}{'exchange':>10}{'exposed DP':>12}{'img/s':>9}")
    for pairs, f in figures.items():
        exposed = max(0.0, f["step"] - f["no_dp"]) if pairs > 1 else 0.0
        row = {"step_s": f["step"], "compute_s": f["no_dp"] - f["exchange"], "exchange_s": f["exchange"],
               "exposed_dp_s": exposed, "img_per_s": args.batch_size * pairs / f["step"],
               "processes": 2 * pairs, "cores": cores}
        if "allreduce_alone" in f:
            row["dp_allreduce_alone_s"] = f["allreduce_alone"]
        rows[str(pairs)] = row
        name = f"{pairs} pair{'s' if pairs > 1 else ''} ({2 * pairs} ranks)"
        print(f"    {name:18}{1e3 * row['step_s']:10.0f}{1e3 * row['compute_s']:10.0f}"
              f"{1e3 * row['exchange_s']:10.0f}{1e3 * exposed:12.0f}{row['img_per_s']:9.1f}")
    two = rows[str(PAIRS[-1])]
    if "dp_allreduce_alone_s" in two:
        alone, exposed = two["dp_allreduce_alone_s"], two["exposed_dp_s"]
        two["dp_hidden_s"] = max(0.0, alone - exposed)
        print(f"    the DP all-reduce of one column's gradients alone: {1e3 * alone:.0f} ms; exposed in a step: "
              f"{1e3 * exposed:.0f} ms; hidden behind backward: {1e3 * two['dp_hidden_s']:.0f} ms"
              + (" (processes outnumber cores here: communication and compute compete for them)"
                 if 2 * PAIRS[-1] > cores else ""))
    res["scaling"] = {"pairs": rows, "indicative": True,
                      "note": f"gloo processes sharing {cores} CPU cores; not a multi-GPU measurement"}

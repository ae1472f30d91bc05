"""The benchmark's `scaling` section: the rank placement with 1 pair (2 processes) and
2 pairs (4 processes), each training step split into compute, the exchange between
the columns, and the data-parallel communication that backward did not hide.

Every process runs the same steps twice over, interleaved: with DDP's all-reduce, and
with DDP's communication hook swapped for one that returns the local gradients
unreduced. The difference is the exposed data-parallel time. The exchange's time is
measured around its collectives by the exchange itself (`ProcessExchange.seconds`),
waiting for the other column included. Compute is what remains. Always gloo
processes on the CPU.
"""
import os
import statistics
import tempfile

import torch
import torch.distributed as dist

from alexnet_mp.bench.timing import make_batch, model_steps, timed
from alexnet_mp.distributed.launch import free_port
from alexnet_mp.distributed.parallel import Topology, apply_data_parallel
from alexnet_mp.distributed.placement import rank_alexnet
from alexnet_mp.train.optim import PaperSGD, param_groups

PAIRS = (1, 2)


def _switchable_allreduce(state, bucket):
    """DDP's own all-reduce while state["on"], else the local gradients as they are."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    if state["on"]:
        return default_hooks.allreduce_hook(state["group"], bucket)
    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut


def _worker(rank, world, port, batch, steps, repeats, classes, path):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    topology = Topology()
    net = rank_alexnet("cpu", classes, seed=0, topology=topology)
    model = apply_data_parallel(net, topology)
    hook = {"on": True, "group": topology.column_group}
    if model is not net:
        model.register_comm_hook(hook, _switchable_allreduce)
    exchange = net.exchange
    x, y = make_batch(batch, torch.device("cpu"), classes=classes)
    train, _ = model_steps(model, PaperSGD(param_groups(net, 5e-4), lr=1e-4), x, y, steps)
    spent = {True: [], False: []}

    def variant(on):
        def run():
            hook["on"], exchange.seconds = on, 0.0
            train()
            spent[on].append(exchange.seconds / steps)
        return run
    variants = [variant(True), variant(False)] if model is not net else [variant(True)]
    times = timed(variants, repeats, warmup=2)     # the second step runs on rebuilt buckets
    quiet = spent[model is net]          # the exchange's time in the steps without DP's all-reduce
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
            port = free_port()
            path = os.path.join(d, f"{pairs}.pt")
            mp.spawn(_worker, args=(2 * pairs, port, args.batch_size, args.steps, args.repeats, classes, path),
                     nprocs=2 * pairs, join=True)
            out[pairs] = torch.load(path, weights_only=True)
    return out


def scaling_rows(figures, batch_size):
    """{pairs: step, compute, exchange and exposed data-parallel seconds, img/s} from `bench_scaling`."""
    cores = os.cpu_count() or 1
    rows = {}
    for pairs, f in figures.items():
        exposed = max(0.0, f["step"] - f["no_dp"]) if pairs > 1 else 0.0
        row = {"step_s": f["step"], "compute_s": f["no_dp"] - f["exchange"], "exchange_s": f["exchange"],
               "exposed_dp_s": exposed, "img_per_s": batch_size * pairs / f["step"],
               "processes": 2 * pairs, "cores": cores}
        if "allreduce_alone" in f:
            row["dp_allreduce_alone_s"] = f["allreduce_alone"]
            row["dp_hidden_s"] = max(0.0, f["allreduce_alone"] - exposed)
        rows[str(pairs)] = row
    return rows

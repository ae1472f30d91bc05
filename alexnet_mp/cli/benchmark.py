"""Speed of the faithful network and its input pipeline, as ratios measured side by side.

The code behind tools/benchmark.py, whose docstring has the exact command lines.
"""
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from torch.nn import functional as F

from alexnet_mp import AlexNet
from alexnet_mp.atomic import atomic_write
from alexnet_mp.backends import amp_note, autocast, configure, synchronize
from alexnet_mp.cli import ArgumentParser, check_output_file, tool
from alexnet_mp.cli.train import add_speed_flags
from alexnet_mp.config import CROP
from alexnet_mp.exchange import COLUMNS
from alexnet_mp.optim import PaperSGD, param_groups

SECTIONS = ("model", "tworank", "tencrop", "data", "lrn", "scaling")


def _all_devices():
    """Every device a timed function may have queued work on (both GPUs of a two-device model)."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def timed(fns, repeats, warmup=1):
    """For each of `fns`, (median, min, max) seconds of a call after `warmup`
    untimed calls. The functions take turns in every repeat, so that the
    machine's drift (this 2-core box varies by 10-20%) lands on all of them alike.
    Every GPU is synchronised before each clock read: otherwise a clock times the
    launches, or the previous function's queued work."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            synchronize(_all_devices())
            t = time.perf_counter()
            fn()
            synchronize(_all_devices())
            ts.append(time.perf_counter() - t)
    return [(statistics.median(ts), min(ts), max(ts)) for ts in times]


def model_steps(model, optimizer, x, y, steps, amp=None):
    """(train, eval) functions that each run `steps` batches; the loss in float32 as training does."""
    device = x.device

    def train_steps():
        model.train()
        for _ in range(steps):
            with autocast(device, amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def eval_steps():
        model.eval()
        for _ in range(steps):
            with autocast(device, amp):
                model(x)
    return train_steps, eval_steps


def images_per_s(fns, images, repeats):
    return [tuple(images / t for t in r) for r in timed(fns, repeats)]


def _batch(b, device, channels_last=False, classes=1000):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(b, 3, CROP, CROP, generator=g) * 60).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, classes, (b,), generator=g).to(device)


def bench_models(args, device):
    import torchvision
    x, y = _batch(args.batch_size, device, device.type == "cuda")
    tv = torchvision.models.alexnet(weights=None).to(device)
    ours = AlexNet(1000, seed=0, device=device)
    if device.type == "cuda":
        tv, ours = tv.to(memory_format=torch.channels_last), ours.to(memory_format=torch.channels_last)
    tv_train, tv_eval = model_steps(tv, torch.optim.SGD(tv.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4),
                                    x, y, args.steps, args.amp)
    our_train, our_eval = model_steps(ours, PaperSGD(param_groups(ours, 5e-4), lr=1e-4), x, y, args.steps, args.amp)
    n = args.batch_size * args.steps
    (tv_t, our_t), (tv_e, our_e) = (images_per_s(fns, n, args.repeats)
                                    for fns in ((tv_train, our_train), (tv_eval, our_eval)))
    return {"torchvision": (tv_t, tv_e), "grouped": (our_t, our_e)}


def _tworank_worker(rank, port, batch, steps, repeats, threads, path, amp):
    import torch.distributed as dist
    from alexnet_mp import rank_alexnet
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = rank_alexnet("cpu", 1000, seed=0)
    x, y = _batch(batch, torch.device("cpu"))
    result = images_per_s(model_steps(model, PaperSGD(param_groups(model, 5e-4), lr=1e-4), x, y, steps, amp),
                          batch * steps, repeats)
    if rank == 0:
        torch.save(result, path)
    dist.destroy_process_group()


def tworank_label(device):
    """What the (c) row measures here, or None where nothing comparable can run: a CPU
    gloo pair is never set against a GPU."""
    if device.type != "cuda":
        return "(c) 2-rank placement (2 gloo processes, CPU)"
    if torch.cuda.device_count() >= 2:
        return "(c) two-device placement (cuda:0, cuda:1)"
    return None


def bench_tworank(args, device):
    """Both columns on two GPUs in one process, or in two gloo processes sharing the CPU's threads."""
    if device.type == "cuda":
        from alexnet_mp import two_device_alexnet
        model = two_device_alexnet(("cuda:0", "cuda:1"), 1000, seed=0).to(memory_format=torch.channels_last)
        x, y = _batch(args.batch_size, torch.device("cuda:0"), True)
        return images_per_s(model_steps(model, PaperSGD(param_groups(model, 5e-4), lr=1e-4), x, y, args.steps,
                                        args.amp), args.batch_size * args.steps, args.repeats)
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    threads = max(1, torch.get_num_threads() // COLUMNS)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.pt")
        mp.spawn(_tworank_worker, args=(port, args.batch_size, args.steps, args.repeats, threads, path, args.amp),
                 nprocs=2, join=True)
        return torch.load(path, weights_only=True)


def bench_tencrop(args, device):
    """Seconds per image of the evaluation forward + softmax average, ten crops vs the centre."""
    from alexnet_mp.evaluate import predict
    from alexnet_mp.data import EpochSampler
    model = AlexNet(1000, seed=0, device=device)
    n = max(2, args.batch_size // 4)
    crops10 = _batch(n * 10, torch.device("cpu"))[0].reshape(n, 10, 3, CROP, CROP)
    fns = []
    for crops, images in ((1, crops10[:, 4].contiguous()), (10, crops10)):
        data = torch.utils.data.TensorDataset(images, torch.zeros(n, dtype=torch.long))
        loader = torch.utils.data.DataLoader(data, batch_size=n, sampler=EpochSampler(n, shuffle=False))
        fns.append(lambda loader=loader, crops=crops: predict(model, loader, device, crops, amp=args.amp))
    one, ten = timed(fns, args.repeats)
    return {1: tuple(t / n for t in one), 10: tuple(t / n for t in ten)}


def bench_lrn(args, device):
    """The LRN's share of a training step: both LRN layers, forward and backward, at the
    shapes the network feeds them (conv1's and conv2's outputs), against a whole step."""
    model = AlexNet(1000, seed=0, device=device).to(memory_format=torch.channels_last)
    x, y = _batch(args.batch_size, device, True)
    step, _ = model_steps(model, PaperSGD(param_groups(model, 5e-4), lr=1e-4), x, y, args.steps, args.amp)
    dtype = torch.bfloat16 if args.amp else torch.float32    # what the convs before it would give
    acts = [torch.rand(args.batch_size, c, hw, hw, device=device, dtype=dtype)
            .contiguous(memory_format=torch.channels_last).mul_(50).requires_grad_()
            for c, hw in ((96, 55), (256, 27))]

    def lrn_steps():
        for _ in range(args.steps):
            for a in acts:
                with autocast(device, args.amp):
                    out = model.lrn(a)
                out.backward(torch.ones_like(out))
    t_step, t_lrn = timed([step, lrn_steps], args.repeats)
    return t_lrn[0] / t_step[0]


def _photos(folder, count, rng):
    """`count` 500x375 JPEGs (ImageNet's typical size) of smooth random colour fields, 2 classes."""
    from PIL import Image
    for i in range(count):
        d = os.path.join(folder, f"c{i % 2}")
        os.makedirs(d, exist_ok=True)
        low = rng.uniform(0, 255, size=(6, 8, 3)).astype(np.uint8)
        img = Image.fromarray(low).resize((500, 375), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 8, size=(375, 500, 3))
        Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8)).save(
            os.path.join(d, f"{i:05d}.JPEG"), quality=90)


def bench_data(args, device):
    """Images/s in ONE process (one worker's share): our raw and jpeg stores with the
    paper's transform vs torchvision ImageFolder + PIL + RandomResizedCrop + ToTensor + Normalize."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    from alexnet_mp.data import TORCHVISION_MEAN, TORCHVISION_STD, Store, StoreDataset, TrainTransform, load_stats
    from alexnet_mp.prepare import prepare
    count = 64 if args.quick else 400
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as d:
            _photos(os.path.join(d, "src", "train"), count, np.random.default_rng(0))
            pipelines = {"torchvision": ImageFolder(os.path.join(d, "src", "train"), T.Compose([
                T.RandomResizedCrop(CROP), T.ToTensor(), T.Normalize(TORCHVISION_MEAN, TORCHVISION_STD)]))}
            for fmt in ("raw", "jpeg"):
                store = os.path.join(d, fmt)
                prepare(os.path.join(d, "src"), store, workers=os.cpu_count() or 1, fmt=fmt, log=lambda *a: None)
                pipelines[fmt] = StoreDataset(Store(store, "train"), TrainTransform(*load_stats(store)))
            pipelines["bytes_per_image"] = {
                fmt: os.path.getsize(os.path.join(d, fmt, "train", f"images.{ext}")) / count
                for fmt, ext in (("raw", "u8"), ("jpeg", "jpg"))}

            def run(ds):
                def consume():
                    for i in range(len(ds)):
                        ds[i]        # dropped at once, as a DataLoader's collate frees it
                return consume
            sizes = pipelines.pop("bytes_per_image")
            names = list(pipelines)
            speeds = dict(zip(names, images_per_s([run(pipelines[k]) for k in names], count, args.repeats)))
            return speeds, sizes
    finally:
        torch.set_num_threads(threads)


def _fmt(m):
    return f"{m[0]:8.1f}  ({min(m[1:]):.1f}..{max(m[1:]):.1f})"


@tool
def main(argv=None):
    p = ArgumentParser(description="Side-by-side speed ratios")
    p.add_argument("sections", nargs="*",
                   help=f"any of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2, help="batches per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_speed_flags(p)
    p.add_argument("--quick", action="store_true", help="tiny batch, one repeat: a smoke run for CI")
    p.add_argument("--json", help="write the figures and ratios here")
    args = p.parse_args(argv)
    args.sections = args.sections or list(SECTIONS)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    for flag, value in (("-b", args.batch_size), ("--steps", args.steps), ("--repeats", args.repeats)):
        if value < 1:
            p.error(f"{flag} {value} is out of range: it must be at least 1")
    if args.json:
        check_output_file(args.json, "--json")      # before minutes of timing, not after
    if args.quick:
        args.batch_size, args.steps, args.repeats = 4, 1, 1
    device = torch.device(args.device)
    notes = configure(device, args.tf32) + amp_note(args.amp)    # float32 unless a speed mode is asked for
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{os.cpu_count()}",
           "threads": torch.get_num_threads(), "batch_size": args.batch_size, "torch": torch.__version__,
           "amp": args.amp, "tf32": args.tf32, "quick": args.quick}
    print(f"device {res['device']}, {res['threads']} threads, batch {args.batch_size}, torch {torch.__version__}"
          + "".join(f"  [{n}: speed mode, departs from the paper]" for n in notes))
    from alexnet_mp.cli.scaling import report_scaling
    for section, report in (("model", report_models), ("tencrop", report_tencrop), ("data", report_data),
                            ("lrn", report_lrn), ("scaling", report_scaling)):
        if section in args.sections or (section == "model" and "tworank" in args.sections):
            report(args, device, res)
    if args.json:
        atomic_write(args.json, lambda f: json.dump(res, f, indent=1), "w")
        print(f"wrote {args.json}")
    return 0


def report_models(args, device, res):
    m = bench_models(args, device)
    res["img_per_s"] = {k: {"train": v[0], "eval": v[1]} for k, v in m.items()}
    res["train_ratio"] = m["grouped"][0][0] / m["torchvision"][0][0]
    res["eval_ratio"] = m["grouped"][1][0] / m["torchvision"][1][0]
    rows = [("(a) torchvision alexnet", m["torchvision"], 1.0, 1.0),
            ("(b) grouped placement", m["grouped"], res["train_ratio"], res["eval_ratio"])]
    label = tworank_label(device)
    if "tworank" in args.sections and label is None:
        res["two_rank"] = f"skipped: {torch.cuda.device_count()} GPU visible, the two-device placement needs 2"
    elif "tworank" in args.sections:
        t = bench_tworank(args, device)
        res["img_per_s"]["two_rank"] = {"train": t[0], "eval": t[1], "what": label}
        res["two_rank_ratio"] = t[0][0] / m["grouped"][0][0]
        res["two_rank_eval_ratio"] = t[1][0] / m["grouped"][1][0]
        rows.append((label, t, t[0][0] / m["torchvision"][0][0], t[1][0] / m["torchvision"][1][0]))
    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{'model':{width}}{'train img/s (spread)':>28}{'eval img/s (spread)':>28}  train/(a)  eval/(a)")
    for name, (tr, ev), r1, r2 in rows:
        print(f"{name:{width}}{_fmt(tr):>28}{_fmt(ev):>28}  {r1:8.2f}x  {r2:7.2f}x")
    if "two_rank_ratio" in res:
        print(f"(c)/(b): train {res['two_rank_ratio']:.2f}x, eval {res['two_rank_eval_ratio']:.2f}x")
    elif "two_rank" in res:
        print(f"(c) {res['two_rank']} (a CPU gloo pair is not compared with a GPU)")


def report_tencrop(args, device, res):
    tc = bench_tencrop(args, device)
    res["tencrop_cost"] = tc[10][0] / tc[1][0]
    print(f"\n(d) evaluation, ms per image: centre {1e3 * tc[1][0]:.1f}, ten-crop {1e3 * tc[10][0]:.1f}: "
          f"ten-crop costs {res['tencrop_cost']:.2f}x the centre crop")


def report_lrn(args, device, res):
    res["lrn_share_of_train_step"] = bench_lrn(args, device)
    kernel = "fused (torch.compile)" if device.type == "cuda" else "eager, in place"
    print(f"\n(f) the two LRN layers, forward + backward ({kernel}): "
          f"{100 * res['lrn_share_of_train_step']:.1f}% of a grouped training step")


def report_data(args, device, res):
    dd, sizes = bench_data(args, device)
    res["data_img_per_s"] = {k: v[0] for k, v in dd.items()}
    res["data_bytes_per_image"] = sizes
    res["data_ratio"] = dd["raw"][0] / dd["torchvision"][0]
    res["data_ratio_jpeg"] = dd["jpeg"][0] / dd["torchvision"][0]
    print("\n(e) training input pipeline, one process (= one worker), 500x375 JPEG sources:")
    print(f"    torchvision ImageFolder+RandomResizedCrop  {_fmt(dd['torchvision'])} img/s  1.00x")
    for fmt in ("raw", "jpeg"):
        print(f"    ours, {fmt:4} store ({sizes[fmt] / 1024:5.0f} KB/image)   {_fmt(dd[fmt])} img/s  "
              f"{dd[fmt][0] / dd['torchvision'][0]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())

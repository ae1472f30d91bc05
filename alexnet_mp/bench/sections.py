"""The benchmark's sections, each timed side by side against a reference in one run.

(a, b) the grouped network against torchvision's alexnet, (c) the split
placements against the grouped one, (d) ten crops against the centre crop,
(e) the input pipeline against torchvision's ImageFolder, (f) the LRN's share of
a step. The scaling section (g) is `alexnet_mp.bench.scaling`. (h) `caffe`: the time
and peak memory of importing a full-size bvlc_alexnet-shaped .caffemodel. `prepare`:
how long converting a tree takes, `alexnet_mp.bench.prepare_speed`.
"""
import os
import tempfile

import numpy as np
import torch

from alexnet_mp.config import CROP
from alexnet_mp.bench.timing import images_per_s, make_batch, model_steps, timed
from alexnet_mp.data.loader import EpochSampler
from alexnet_mp.data.prepare import prepare
from alexnet_mp.data.store import Store, StoreDataset
from alexnet_mp.data.storecheck import read_stats
from alexnet_mp.data.transforms import TORCHVISION_MEAN, TORCHVISION_STD, TrainTransform
from alexnet_mp.distributed.launch import free_port
from alexnet_mp.distributed.placement import rank_alexnet, two_device_alexnet
from alexnet_mp.eval.tencrop import predict
from alexnet_mp.model.arch import COLUMNS
from alexnet_mp.model.layers import lrn_kernel_status
from alexnet_mp.model.net import AlexNet
from alexnet_mp.numerics import autocast
from alexnet_mp.train.optim import PaperSGD, param_groups

SECTIONS = ("model", "tworank", "tencrop", "data", "lrn", "health", "scaling", "caffe", "prepare")


def bench_models(args, device):
    import torchvision
    x, y = make_batch(args.batch_size, device, device.type == "cuda")
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
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = rank_alexnet("cpu", 1000, seed=0)
    x, y = make_batch(batch, torch.device("cpu"))
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
        model = two_device_alexnet(("cuda:0", "cuda:1"), 1000, seed=0).to(memory_format=torch.channels_last)
        x, y = make_batch(args.batch_size, torch.device("cuda:0"), True)
        return images_per_s(model_steps(model, PaperSGD(param_groups(model, 5e-4), lr=1e-4), x, y, args.steps,
                                        args.amp), args.batch_size * args.steps, args.repeats)
    import torch.multiprocessing as mp
    port = free_port()
    threads = max(1, torch.get_num_threads() // COLUMNS)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.pt")
        mp.spawn(_tworank_worker, args=(port, args.batch_size, args.steps, args.repeats, threads, path, args.amp),
                 nprocs=2, join=True)
        return torch.load(path, weights_only=True)


def bench_tencrop(args, device):
    """Seconds per image of the evaluation forward + softmax average, ten crops vs the centre."""
    model = AlexNet(1000, seed=0, device=device)
    n = max(2, args.batch_size // 4)
    crops10 = make_batch(n * 10, torch.device("cpu"))[0].reshape(n, 10, 3, CROP, CROP)
    fns = []
    for crops, images in ((1, crops10[:, 4].contiguous()), (10, crops10)):
        data = torch.utils.data.TensorDataset(images, torch.zeros(n, dtype=torch.long))
        loader = torch.utils.data.DataLoader(data, batch_size=n, sampler=EpochSampler(n, shuffle=False))
        fns.append(lambda loader=loader, crops=crops: predict(model, loader, device, crops, amp=args.amp))
    one, ten = timed(fns, args.repeats)
    return {1: tuple(t / n for t in one), 10: tuple(t / n for t in ten)}


def bench_lrn(args, device):
    """The LRN's share of a training step: both LRN layers, forward and backward, at the
    shapes the network feeds them (conv1's and conv2's outputs), against a whole step;
    and `lrn_kernel_status()` after it: the kernel that ran, the graphs compiled, and why
    compiling failed if it did (the eager kernel then ran, and the share is the eager one's)."""
    model = AlexNet(1000, seed=0, device=device).to(memory_format=torch.channels_last)
    x, y = make_batch(args.batch_size, device, True)
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
    return t_lrn[0] / t_step[0], lrn_kernel_status()


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
                prepare(os.path.join(d, "src"), store, workers=os.cpu_count() or 1, fmt=fmt, log=lambda *a: None,
                        no_val=True)
                pipelines[fmt] = StoreDataset(Store(store, "train"), TrainTransform(*read_stats(store)))
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


# Run in a fresh process. Linux: writing 5 to /proc/self/clear_refs resets the peak resident
# set (VmHWM) to the current one, so the peak after the imports' own transient peak is the
# import's; ru_maxrss cannot be reset. tracemalloc counts numpy's buffers (not the mapped file).
_CAFFE_PROBE = """
import json, sys, time, tracemalloc
from alexnet_mp.caffe.convert import import_caffemodel
from alexnet_mp.checkpoint import atomic_save

def status(key):
    with open("/proc/self/status") as f:
        return 1024 * int(next(line.split()[1] for line in f if line.startswith(key + ":")))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
tracemalloc.start()
t0 = time.perf_counter()
done = import_caffemodel(sys.argv[1], sys.argv[2])
t1 = time.perf_counter()
atomic_save(done.checkpoint, sys.argv[3])
t2 = time.perf_counter()
print(json.dumps({"read_convert_s": t1 - t0, "save_s": t2 - t1, "baseline": base, "peak": status("VmHWM"),
                  "traced_peak": tracemalloc.get_traced_memory()[1]}))
"""


def bench_caffe(args, device):
    """tools/import_caffe.py's work (read, check, convert, save) on a synthetic 1000-class
    bvlc_alexnet-shaped file of full size (the real one cannot be downloaded here), each
    repeat in a fresh process: seconds, peak resident memory above that process's baseline (the
    mapped file's pages included), and the peak of the allocations tracemalloc sees. The file
    was just written, so it is read from the page cache (Linux only: /proc/self)."""
    import json
    import subprocess
    import sys
    from alexnet_mp.caffe.synthetic import write_synthetic
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory() as d:
        model, mean, out = (os.path.join(d, n) for n in ("synthetic.caffemodel", "mean.npy", "out.pt"))
        size = write_synthetic(model, 1000)
        np.save(mean, np.full((3, 256, 256), 110.0))
        runs = []
        for _ in range(1 if args.quick else min(args.repeats, 3)):
            proc = subprocess.run([sys.executable, "-c", _CAFFE_PROBE, model, mean, out], env=env,
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    seconds = sorted(r["read_convert_s"] + r["save_s"] for r in runs)
    peak = max(r["peak"] - r["baseline"] for r in runs)
    return {"file_bytes": size, "seconds": (seconds[len(seconds) // 2], seconds[0], seconds[-1]),
            "read_convert_s": min(r["read_convert_s"] for r in runs), "save_s": min(r["save_s"] for r in runs),
            "peak_above_baseline_bytes": peak, "peak_over_file": peak / size, "runs": len(runs),
            "traced_peak_bytes": max(r["traced_peak"] for r in runs)}

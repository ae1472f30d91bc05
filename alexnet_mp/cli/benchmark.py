"""Speed of the faithful network and its input pipeline, as ratios measured side by side.

The code behind tools/benchmark.py, whose docstring has the exact command lines.
The timing is `alexnet_mp.bench`; this module parses, runs the sections asked
for and prints their tables.
"""
import os
import sys

import torch

from alexnet_mp.bench.health import bench_health
from alexnet_mp.bench.prepare_speed import DRAFTS, IMAGENET_TRAIN, bench_prepare
from alexnet_mp.bench.scaling import PAIRS, bench_scaling, scaling_rows
from alexnet_mp.bench.sections import (SECTIONS, bench_caffe, bench_data, bench_lrn, bench_models, bench_tencrop,
                                       bench_tworank, tworank_label)
from alexnet_mp.bench.timing import BenchConfig
from alexnet_mp.cli import ArgumentParser, add_speed_flags, check_output_file, tool
from alexnet_mp.errors import UsageError
from alexnet_mp.files import write_json
from alexnet_mp.numerics import amp_note, configure


def _fmt(m):
    return f"{m[0]:8.1f}  ({min(m[1:]):.1f}..{max(m[1:]):.1f})"


def parse_args(argv):
    p = ArgumentParser(description="Side-by-side speed ratios")
    p.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2, help="batches per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_speed_flags(p)
    p.add_argument("--quick", action="store_true", help="tiny batch, one repeat: a smoke run for CI")
    p.add_argument("--json", help="write the figures and ratios here")
    args = p.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    for flag, value in (("-b", args.batch_size), ("--steps", args.steps), ("--repeats", args.repeats)):
        if value < 1:
            p.error(f"{flag} {value} is out of range: it must be at least 1")
    if args.json:
        check_output_file(args.json, "--json")      # before minutes of timing, not after
    return args


def bench_device(name):
    """The device to time on; a benchmark never measures another device than the one asked for."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name} is not a device: pass cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UsageError(f"--device {name}: no such GPU here ({torch.cuda.device_count()} visible): "
                         f"run on a machine with one, or pass --device cpu")
    return device


@tool
def main(argv=None):
    args = parse_args(argv)
    device = bench_device(args.device)
    cfg = BenchConfig(batch_size=args.batch_size, steps=args.steps, repeats=args.repeats, amp=args.amp,
                      quick=args.quick, sections=tuple(args.sections or SECTIONS))
    if cfg.quick:
        cfg = BenchConfig(batch_size=4, steps=1, repeats=1, amp=cfg.amp, quick=True, sections=cfg.sections)
    notes = configure(device, args.tf32) + amp_note(args.amp)    # float32 unless a speed mode is asked for
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{os.cpu_count()}",
           "threads": torch.get_num_threads(), "batch_size": cfg.batch_size, "torch": torch.__version__,
           "amp": args.amp, "tf32": args.tf32, "quick": cfg.quick}
    print(f"device {res['device']}, {res['threads']} threads, batch {cfg.batch_size}, torch {torch.__version__}"
          + "".join(f"  [{n}: speed mode, departs from the paper]" for n in notes))
    for section, report in (("model", report_models), ("tencrop", report_tencrop), ("data", report_data),
                            ("lrn", report_lrn), ("health", report_health), ("scaling", report_scaling),
                            ("caffe", report_caffe), ("prepare", report_prepare)):
        if section in cfg.sections or (section == "model" and "tworank" in cfg.sections):
            report(cfg, device, res)
    if args.json:
        write_json(args.json, res)
        print(f"wrote {args.json}")
    return 0


def report_models(cfg, device, res):
    m = bench_models(cfg, device)
    res["img_per_s"] = {k: {"train": v[0], "eval": v[1]} for k, v in m.items()}
    res["train_ratio"] = m["grouped"][0][0] / m["torchvision"][0][0]
    res["eval_ratio"] = m["grouped"][1][0] / m["torchvision"][1][0]
    rows = [("(a) torchvision alexnet", m["torchvision"], 1.0, 1.0),
            ("(b) grouped placement", m["grouped"], res["train_ratio"], res["eval_ratio"])]
    label = tworank_label(device)
    if "tworank" in cfg.sections and label is None:
        res["two_rank"] = f"skipped: {torch.cuda.device_count()} GPU visible, the two-device placement needs 2"
    elif "tworank" in cfg.sections:
        t = bench_tworank(cfg, device)
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


def report_tencrop(cfg, device, res):
    tc = bench_tencrop(cfg, device)
    res["tencrop_cost"] = tc[10][0] / tc[1][0]
    print(f"\n(d) evaluation, ms per image: centre {1e3 * tc[1][0]:.1f}, ten-crop {1e3 * tc[10][0]:.1f}: "
          f"ten-crop costs {res['tencrop_cost']:.2f}x the centre crop")


def report_lrn(cfg, device, res):
    """(f), naming the kernel that ran: the fused one can fall back to eager for good (no compiler)."""
    res["lrn_share_of_train_step"], status = bench_lrn(cfg, device)
    res["lrn_kernel"] = status
    kernel = {"fused": f"fused (torch.compile, {status['compiles']} graphs compiled in this run)",
              "eager": "eager, in place"}.get(status["kernel"], str(status["kernel"]))
    print(f"\n(f) the two LRN layers, forward + backward ({kernel}): "
          f"{100 * res['lrn_share_of_train_step']:.1f}% of a grouped training step")
    if status["failure"]:
        print(f"    {status['failure']}")


def report_health(cfg, device, res):
    share, figures = bench_health(cfg, device, print_freq=10)
    res["health_overhead_at_print_freq_10"] = share
    print(f"\n(h) training health figures (dead ReLU units, RMS, update ratio) at --print-freq 10: "
          f"{100 * share:+.1f}% of the time of 10 grouped training steps"
          + (f" (conv1's RMS {figures['conv1']['rms']:.3g})" if figures else ""))


def report_data(cfg, device, res):
    dd, sizes = bench_data(cfg, device)
    res["data_img_per_s"] = {k: v[0] for k, v in dd.items()}
    res["data_bytes_per_image"] = sizes
    res["data_ratio"] = dd["raw"][0] / dd["torchvision"][0]
    res["data_ratio_jpeg"] = dd["jpeg"][0] / dd["torchvision"][0]
    print("\n(e) training input pipeline, one process (= one worker), 500x375 JPEG sources:")
    print(f"    torchvision ImageFolder+RandomResizedCrop  {_fmt(dd['torchvision'])} img/s  1.00x")
    for fmt in ("raw", "jpeg"):
        print(f"    ours, {fmt:4} store ({sizes[fmt] / 1024:5.0f} KB/image)   {_fmt(dd[fmt])} img/s  "
              f"{dd[fmt][0] / dd['torchvision'][0]:.2f}x")


def report_scaling(cfg, device, res):
    rows = scaling_rows(bench_scaling(cfg), cfg.batch_size)
    cores = os.cpu_count() or 1
    print(f"\n(g) scaling, rank placement, gloo processes on the CPU, batch {cfg.batch_size} per pair "
          f"(INDICATIVE: the processes share this machine's {cores} cores; network links would differ)")
    print(f"    {'':18}{'step ms':>10}{'compute':>10}{'exchange':>10}{'exposed DP':>12}{'img/s':>9}")
    for pairs, row in rows.items():
        name = f"{pairs} pair{'s' if int(pairs) > 1 else ''} ({row['processes']} ranks)"
        print(f"    {name:18}{1e3 * row['step_s']:10.0f}{1e3 * row['compute_s']:10.0f}"
              f"{1e3 * row['exchange_s']:10.0f}{1e3 * row['exposed_dp_s']:12.0f}{row['img_per_s']:9.1f}")
    two = rows[str(PAIRS[-1])]
    if "dp_allreduce_alone_s" in two:
        print(f"    the DP all-reduce of one column's gradients alone: {1e3 * two['dp_allreduce_alone_s']:.0f} ms; "
              f"exposed in a step: {1e3 * two['exposed_dp_s']:.0f} ms; hidden behind backward: "
              f"{1e3 * two['dp_hidden_s']:.0f} ms"
              + (" (processes outnumber cores here: communication and compute compete for them)"
                 if 2 * PAIRS[-1] > cores else ""))
    res["scaling"] = {"pairs": rows, "indicative": True,
                      "note": f"gloo processes sharing {cores} CPU cores; not a multi-GPU measurement"}


def report_caffe(cfg, device, res):
    c = bench_caffe(cfg, device)
    res["caffe_import"] = c
    mib = 2 ** 20
    print(f"\n(h) tools/import_caffe.py on a synthetic 1000-class bvlc_alexnet-shaped file "
          f"({c['file_bytes'] / mib:.1f} MiB, page cache warm), {c['runs']} fresh process(es):")
    print(f"    {c['seconds'][0]:.2f} s ({c['seconds'][1]:.2f}..{c['seconds'][2]:.2f}): read, check and convert "
          f"{c['read_convert_s']:.2f} s, save {c['save_s']:.2f} s; peak memory "
          f"{c['peak_above_baseline_bytes'] / mib:.0f} MiB resident above the process's baseline, "
          f"{c['peak_over_file']:.2f}x the file (allocations alone: {c['traced_peak_bytes'] / mib:.0f} MiB)")


def _db(d):
    return "identical" if d["psnr_db"] is None else \
        f"{d['mean_abs']:.2f} / {d['max_abs']:2d} / {d['psnr_db']:.1f} dB ({d['worst_image_psnr_db']:.1f})"


def report_prepare(cfg, device, res):
    """(i)-(v) of `alexnet_mp.bench.prepare_speed`: per-worker speed, draft, end to end,
    the parent's bookkeeping, a kill's cost; ImageNet's hours at -j 16 from them."""
    p = bench_prepare(cfg, device)
    res["prepare"] = p
    m = p["machine"]
    print(f"\n(i) prepare, ONE worker process, img/s median (best..worst of {p['repeats']}), JPEG sources "
          f"at quality {p['source_quality']}; {m['model_name']}, {m['cpu_count']} cores, Pillow {m['pillow']}")
    steps = list(next(iter(p["per_image"].values()))["img_per_s"])
    print(f"    {'source':10}{'files':>6}{'KB':>6}" + "".join(f"{k:>24}" for k in steps))
    for name, r in p["per_image"].items():
        rates = "".join(f"{_fmt(r['img_per_s'][k]):>24}" for k in steps)
        print(f"    {name:10}{r['images']:6d}{r['file_kb']:6.0f}{rates}")
    print("(ii) stored 256x256 pixels against to_256's: mean |d| / max |d| / PSNR pooled (worst image)")
    for name, r in p["per_image"].items():
        drafts = "   ".join(f"draft>={s} (1/{r['draft'][str(s)]['scale']}): {_db(r['draft'][str(s)])}" for s in DRAFTS)
        print(f"    {name:10}{drafts}   yardstick, the jpeg store's q95 re-encode: {_db(r['jpeg_store_q95'])}")
    first = next(iter(p["end_to_end"].values()))
    print(f"(iii) prepare() end to end, {first['images']} training + {first['val_images']} val 500x375 images, "
          f"seconds median (best..worst):")
    for name, r in p["end_to_end"].items():
        print(f"    {name:10} total {_fmt(r['total_s'])}  training split converted in {r['convert_s']:.2f} s = "
              f"{r['convert_img_per_s']:.1f} img/s (first chunk after {r['first_chunk_s']:.2f} s); statistics "
              f"{r['stats_img_per_s']:.0f} img/s (one process)")
    b = p["bookkeeping"]
    print(f"(iv) the parent rewrites status.u8 (and, jpeg, offsets.i64) after each chunk of {p['chunk']}: at "
          f"ImageNet's {b['images']:,} images {1e3 * b['status_write_s'][0]:.1f} ms and "
          f"{1e3 * b['offsets_write_s'][0]:.0f} ms a chunk; over {b['chunks']:,} chunks {b['parent_s_raw']:.0f} s "
          f"(raw), {b['parent_s_jpeg'] / 3600:.2f} h (jpeg), in the parent alone")
    k = p["kill"]
    print(f"(v) killed (SIGKILL, workers too) mid-split at -j {k['workers']}, {k['images']} images: "
          f"{k['recorded_at_kill']} recorded done; {k['converted_not_recorded']} converted but not recorded "
          f"(bound -j x CHUNK = {k['bound']}); the re-run converted {k['rerun_converted']} (images less those "
          f"recorded: {k['images'] - k['recorded_at_kill']}) in {k['rerun_s']:.1f} s"
          + ("  [the run ended before the kill: nothing measured]" if k["finished_before_kill"] else ""))
    for fmt, e in p.get("imagenet", {}).items():
        print(f"    ImageNet's {IMAGENET_TRAIN:,} training images, {fmt}, -j {e['workers']} (ASSUMING one worker's "
              f"500x375 rate holds for each; disk read may bound it): convert {e['convert_h']:.2f} h, statistics "
              f"{e['stats_h']:.2f} h, parent bookkeeping {e['parent_bookkeeping_h']:.2f} h, "
              f"disk {e['disk_gb']:.0f} GB")


if __name__ == "__main__":
    sys.exit(main())

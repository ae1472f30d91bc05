"""Run a function in N gloo processes on 127.0.0.1, one per rank, and collect results."""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alexnet_mp.distributed.launch import free_port  # noqa: F401 (the tests' one free port)


def _worker(rank, world, port, out_dir, fn, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ranks(world, fn, *args):
    """fn(rank, world, *args) in `world` processes; returns the list of their results."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(world, free_port(), out_dir, fn, args), nprocs=world, join=True)
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world)]


def assert_close_rel(got, ref, rtol=1e-5, name=""):
    """max |got - ref| <= rtol * max |ref|: relative to the tensor's scale, as float32 sums allow."""
    err = (got.double() - ref.double()).abs().max().item()
    scale = ref.double().abs().max().item()
    assert err <= rtol * max(scale, 1e-12), f"{name}: max error {err:.3g} vs scale {scale:.3g}"


def assert_one_line_error(proc, text):
    """A tool failed the user-facing way: exit 2, one stderr line containing `text`, no traceback."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], proc.stderr


def assert_one_line_result(code, capsys, text):
    """The in-process form of assert_one_line_error: main(argv) returned 2 and printed
    one stderr line containing `text`; returns that line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]
    return lines[0]


def snapshot(folder):
    """{relative path: (inode, mtime_ns, size)} of every file under `folder`: equal snapshots
    mean nothing was written, replaced or left behind."""
    out = {}
    for d, _, names in os.walk(folder):
        for name in names:
            st = os.stat(os.path.join(d, name))
            out[os.path.relpath(os.path.join(d, name), folder)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def read_only_folder(path):
    """A folder this process cannot create files in; skips the test where the process can
    anyway (root with CAP_DAC_OVERRIDE; run it under `setpriv --bounding-set=-dac_override`)."""
    import pytest
    os.makedirs(path, mode=0o500)
    try:
        open(os.path.join(path, "probe"), "w").close()
    except PermissionError:
        return path
    pytest.skip("this process writes into read-only folders (root)")

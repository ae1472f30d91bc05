"""A prepare killed mid-split resumes where status.u8 says it stopped.

The run is killed the way a machine loses it (SIGKILL to its process group, its
workers too) at a point it cannot miss: its log function, called after a chunk's
status is on disk, waits there for the kill while the workers go on converting.
The reference is an uninterrupted prepare of the same tree. Nothing here times
anything: the waits poll for a file.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from alexnet_mp.data.prepare import CHUNK, prepare
from alexnet_mp.data.storecheck import DONE, TODO

from .conftest import ROOT

# After the first chunk of the training split is recorded, it waits to be killed.
_KILLED_RUN = r"""
import os, signal, sys
from alexnet_mp.data.prepare import prepare
src, out, marker = sys.argv[1:4]

def log(line):
    if " images, " in line and os.sep + "train:" in line:
        open(marker, "w").close()
        signal.pause()
prepare(src, out, workers=2, log=log)
"""


def _tree(src, per_class, rng):
    """train/ and val/ of 2 classes, small JPEGs of random blocks (fast to convert)."""
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(2):
            folder = os.path.join(src, split, f"c{c}")
            os.makedirs(folder)
            for i in range(count):
                low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
                Image.fromarray(low).resize((64, 48), Image.Resampling.NEAREST).save(
                    os.path.join(folder, f"{i:04d}.jpg"), quality=90)


def _files(store, split):
    with open(os.path.join(store, split, "images.u8"), "rb") as f:
        pixels = f.read()
    with open(os.path.join(store, split, "index.json"), "rb") as f:
        index = json.loads(f.read())
    return pixels, index, np.fromfile(os.path.join(store, split, "status.u8"), np.uint8)


def test_prepare_killed_mid_split_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    src, ref, out, marker = (str(tmp_path / n) for n in ("src", "ref", "out", "paused"))
    per_class = 5 * CHUNK // 2                 # 5 chunks in the training split
    _tree(src, per_class, np.random.default_rng(0))
    total = 2 * per_class
    prepare(src, ref, workers=1, log=lambda *a: None)

    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, src, out, marker], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not os.path.exists(marker):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline, "the run recorded no chunk"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    status = np.fromfile(os.path.join(out, "train", "status.u8"), np.uint8)
    done = int((status == DONE).sum())
    assert 0 < done < total and int((status == TODO).sum()) == total - done
    assert not os.path.exists(os.path.join(out, "train", "stats.npz"))

    lines = []
    prepare(src, out, workers=2, log=lines.append)
    progress = [re.search(r"(\d+)/(\d+) images", line) for line in lines if os.sep + "train:" in line]
    # The re-run converts exactly what was not recorded, and all of it.
    assert progress and {int(m.group(2)) for m in progress} == {total - done}
    assert int(progress[-1].group(1)) == total - done

    for split in ("train", "val"):
        got, want = _files(out, split), _files(ref, split)
        assert got[0] == want[0], f"{split}: images.u8 differs from the uninterrupted prepare's"
        assert got[1] == want[1] and (got[2] == DONE).all() and (want[2] == DONE).all()
    with np.load(os.path.join(out, "train", "stats.npz")) as a, np.load(os.path.join(ref, "train", "stats.npz")) as b:
        assert set(a.files) == set(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert not [f for _, _, fs in os.walk(out) for f in fs if ".tmp" in f]

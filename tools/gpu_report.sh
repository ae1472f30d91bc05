#!/usr/bin/env bash
# The README's GPU figures and the GPU suite, in one run on a machine with a GPU:
#
#   bash tools/gpu_report.sh OUT
#
# Uses the torch already installed (no pip, no download) from a plain checkout: it sets
# PYTHONPATH to the checkout itself. Writes into OUT: versions.txt, one log per step, the
# GPU suite's figures (figures/*.json, from tests/test_cuda.py's test_figure_*), the
# benchmark at batch 128 (bench-fp32.json, bench-bf16.json), the rest of the GPU suite,
# and summary.txt, which it prints at the end. Each step runs under `timeout`, its limit trimmed to what is left of
# GPU_REPORT_SECONDS (430 by default: it fits the 460 s that shared/gpu-check.sh gives it,
# and 8 minutes). Exits 1 if a GPU step failed or timed out; without a GPU it runs no GPU
# step, says so in the summary and exits 0. PY chooses the interpreter (python3).
set -u
if [ $# -ne 1 ]; then echo "usage: bash tools/gpu_report.sh OUT" >&2; exit 2; fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 ALEXNET_MP_GPU_OUT=$OUT/figures
PY=${PY:-python3}
END=$((SECONDS + ${GPU_REPORT_SECONDS:-430}))
FAILED=0
: >"$OUT/steps.txt"

step() {  # step LIMIT NAME CMD...: CMD with at most LIMIT seconds (less if the budget is short), into NAME.log
  local cap=$1 name=$2 start=$SECONDS rc what
  shift 2
  [ $((END - SECONDS)) -lt "$cap" ] && cap=$((END - SECONDS))
  if [ "$cap" -le 10 ]; then
    echo "$name: NOT RUN, no time left" >>"$OUT/steps.txt"; FAILED=1; return
  fi
  timeout -k 5 "$cap" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  what="ok"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then what="TIMED OUT"; elif [ $rc -ne 0 ]; then what="FAILED"; fi
  [ $rc -eq 0 ] || FAILED=1
  echo "$name: $what (rc=$rc, ${SECONDS}s in, $((SECONDS - start))s of ${cap}s)" >>"$OUT/steps.txt"
}

(command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi || echo "no nvidia-smi") >"$OUT/nvidia-smi.txt" 2>&1
step 60 versions "$PY" -c '
import platform, torch, torchvision
cuda = torch.cuda.is_available()
print("python", platform.python_version(), "| torch", torch.__version__, "| torchvision", torchvision.__version__,
      "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version() if cuda else "-")
for i in range(torch.cuda.device_count() if cuda else 0):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
print("gpus", torch.cuda.device_count() if cuda else 0)'
cp "$OUT/versions.log" "$OUT/versions.txt"
GPUS=$(sed -n 's/^gpus \([0-9][0-9]*\)$/\1/p' "$OUT/versions.log")
GPU_STEPS="cuda-figures bench-fp32 bench-bf16 cuda-suite"

if [ -z "$GPUS" ]; then
  echo "GPU steps skipped ($GPU_STEPS): torch did not start, see versions.log" >>"$OUT/steps.txt"; FAILED=1
elif [ "$GPUS" -eq 0 ]; then
  echo "GPU steps skipped ($GPU_STEPS): no CUDA device visible" >>"$OUT/steps.txt"
else
  # The figures first, then the benchmark, then the rest of the suite, which has the most
  # subprocesses and compiles: a suite that runs out of time then costs no figure. The
  # benchmark's CPU-only sections (data, scaling) are left out: they say nothing about the GPU.
  SUITE=("$PY" -m pytest -m cuda -v -rA -p no:cacheprovider tests/test_cuda.py)
  HAVE_PYTEST=$("$PY" -c 'import pytest' 2>/dev/null && echo yes)
  if [ -n "$HAVE_PYTEST" ]; then
    step 180 cuda-figures "${SUITE[@]}" -k test_figure --junitxml "$OUT/cuda-figures.xml"
  else
    echo "cuda-figures, cuda-suite: NOT RUN, pytest is not installed for $PY" >>"$OUT/steps.txt"; FAILED=1
  fi
  BENCH=("$PY" tools/benchmark.py model tworank tencrop lrn -b 128 --repeats 5)
  step 60 bench-fp32 "${BENCH[@]}" --json "$OUT/bench-fp32.json"
  step 60 bench-bf16 "${BENCH[@]}" --amp bf16 --json "$OUT/bench-bf16.json"
  if [ -n "$HAVE_PYTEST" ]; then
    step 300 cuda-suite "${SUITE[@]}" -k "not test_figure" --junitxml "$OUT/cuda-suite.xml"
  fi
fi

"$PY" - "$OUT" >"$OUT/summary.txt" 2>&1 <<'EOF'
import glob, json, os, re, sys
out = sys.argv[1]
def read(name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read()
    except OSError:
        return ""
versions = read("versions.txt").splitlines()
started = any(line.startswith("gpus ") for line in versions)
print("gpu_report:", versions[0] if started else "torch did not start (versions.log)")
for line in versions if started else []:
    if line.startswith("GPU "):
        print("  " + line)
print("steps:")
for line in read("steps.txt").splitlines():
    print("  " + line)
    name, _, what = line.partition(": ")
    tail = [l for l in read(f"{name}.log").splitlines() if l.strip()][-1:]
    if what.startswith(("FAILED", "TIMED OUT")) and tail:
        print("    last line of its log: " + tail[0][:150])
for name in ("cuda-figures", "cuda-suite"):
    log = read(f"{name}.log").splitlines()
    closing = [l for l in log if re.search(r"\d+ (passed|failed|skipped|error)", l)]
    if closing:
        print(f"{name}:", closing[-1].strip("= "))
    for l in log:
        if l.startswith(("FAILED", "ERROR")):
            print("  " + l[:150])
figures = sorted(glob.glob(os.path.join(out, "figures", "*.json")))
if figures:
    print(f"figures ({os.path.join(out, 'figures')}):")
    for path in figures:
        f = json.load(open(path))
        print(f"  {f['figure']:42} {f['value']:10.3f} {f['unit']}")
for name in ("bench-fp32.json", "bench-bf16.json"):
    if read(name):
        b = json.loads(read(name))
        speed = b.get("img_per_s", {})
        row = ", ".join(f"{k} {v['train'][0]:.0f}/{v['eval'][0]:.0f}" for k, v in speed.items())   # medians
        got = lambda key, unit="x", scale=1: (f"{scale * b[key]:.2f}{unit}"
                                              if isinstance(b.get(key), (int, float)) else "-")
        print(f"{name} ({b['device']}, batch {b['batch_size']}): img/s train/eval: {row}; grouped/torchvision "
              f"train {got('train_ratio')} eval {got('eval_ratio')}; LRN share "
              f"{got('lrn_share_of_train_step', '%', 100)}; ten-crop cost {got('tencrop_cost')}")
print("files:", " ".join(sorted(os.listdir(out))))
EOF
cat "$OUT/summary.txt"
exit $FAILED

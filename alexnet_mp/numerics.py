"""Numerics and speed settings of a run: float32 or TF32, determinism, cudnn autotuning, bf16.

The paper trained in float32 (§5). In torch 2.14 cudnn convolutions default to
TF32 on Ampere and newer GPUs while matmuls stay float32, so conv1..conv5 would
silently lose 13 mantissa bits. `configure` makes both full float32 unless
`--tf32` asks for the speed mode; `--amp bf16` is the other opt-in speed mode.
Both are listed in the README's table of deviations.

The flags are set through the legacy API only (`torch.backends.cudnn.allow_tf32`,
`torch.set_float32_matmul_precision`), which every torch from 2.6 to 2.14 has and
whose setters also set the newer `fp32_precision` attributes to match: both
views then agree, and nothing that reads either raises. Setting only the new
attributes leaves the legacy flags behind, and torch refuses to read a legacy
flag that disagrees (inductor and dynamo read them: `torch.backends.cudnn.allow_tf32`
raises in the float32 mode, the matmul precision under --tf32).
"""
import contextlib
import os
import warnings

import torch

AMP_DTYPES = {"bf16": torch.bfloat16}


def configure(device, tf32=False, deterministic=False):
    """Set the global flags for a run on `device`; returns the deviations, as words, to print."""
    set_tf32(tf32)
    if deterministic:
        # cuBLAS needs a fixed workspace to give the same sums every time; it reads
        # the variable when it starts, so set it before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    # Not warn_only: a run that asked for bitwise repeatability must not get a
    # nondeterministic kernel in silence; torch names the op, and the run stops.
    torch.use_deterministic_algorithms(deterministic)
    # Autotuning picks the fastest kernels per shape; they may differ run to run.
    torch.backends.cudnn.benchmark = torch.device(device).type == "cuda" and not deterministic
    return ["TF32 convolutions and matmuls (--tf32)"] if tf32 else []


def set_tf32(on):
    """TF32 for cudnn's convolutions and cuBLAS's matmuls, or full float32 for both."""
    with warnings.catch_warnings():
        # torch 2.9 to 2.11 warn once that the legacy API will be deprecated; it is the one
        # they and torch 2.6 to 2.14 all read without raising (see the module docstring).
        warnings.filterwarnings("ignore", message="Please use the new API settings to control TF32")
        torch.backends.cudnn.allow_tf32 = on
        torch.set_float32_matmul_precision("high" if on else "highest")


def autocast(device, amp):
    """bf16 autocast on `device` for `--amp bf16`, else nothing. The LRN, softmax and
    loss stay float32 under it (alexnet_mp.layers, and the callers' .float())."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def amp_note(amp):
    return [f"{amp} autocast (--amp {amp})"] if amp else []


def synchronize(devices):
    """Wait for every CUDA device in `devices`: a clock read before that times the launch, not the work."""
    for d in {torch.device(d) for d in devices}:
        if d.type == "cuda":
            torch.cuda.synchronize(d)

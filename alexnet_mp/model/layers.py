"""The two non-standard pieces of the paper's network: per-column LRN and dropout.

Local response normalisation (§3.3):

    b_i = a_i / (k + alpha' * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2) ** beta

The paper prints alpha = 1e-4 multiplying the raw sum, but the authors' code
divides the configured 1e-4 by n before use, and that is the network that
produced the paper's numbers; so alpha' = alpha / n here (spec §1), the same
convention as `torch.nn.LocalResponseNorm`.

The window never crosses a column boundary: on the original two GPUs each
column normalised only its own maps (N = 48 after conv1, 128 after conv2).
`column_lrn(x, columns=2)` therefore normalises each half of the channels on
its own. `nn.LocalResponseNorm` over all channels would mix the columns.
"""
import os
import warnings

import numpy as np
import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake


def _window_sum(sq, size, out):
    """out[..., i] = sum of sq[..., j] over the centred window |i - j| <= size // 2,
    clipped at the column edge. The last dim holds one column's channels.

    Shifted in-place adds into one buffer: no padding copy, no temporaries
    (on a CPU a fresh activation-sized tensor costs more than the arithmetic).
    """
    out.copy_(sq)
    c = sq.shape[-1]
    for shift in range(1, size // 2 + 1):
        if shift < c:
            out[..., shift:] += sq[..., :c - shift]
            out[..., :c - shift] += sq[..., shift:]
    return out


def _neg_pow(den, beta, out):
    """den ** -beta into `out`. For the paper's beta = 3/4 it is rsqrt(den) *
    sqrt(rsqrt(den)): cheap vector ops instead of a pow (exp and log per element)."""
    if beta != 0.75:
        return torch.pow(den, -beta, out=out)
    torch.rsqrt(den, out=out)
    return out.mul_(out.sqrt())


def _rows(x, columns):
    """(N, C, H, W) -> (N*H*W, columns, C/columns): channels last, a free view for
    channels_last tensors (the model's layout), a copy otherwise."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * h * w, columns, c // columns)


def _unrows(rows, shape):
    n, c, h, w = shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def _window_sum_pure(sq, size):
    """`_window_sum` without in-place writes, for torch.compile to fuse into one kernel."""
    half = size // 2
    padded = torch.nn.functional.pad(sq, (half, half))
    c = sq.shape[-1]
    return sum(padded[..., i:i + c] for i in range(size))


def lrn_forward_pure(xr, size, alpha, beta, k):
    """(b, D) of rows `xr`, out of place: the body of the fused forward."""
    den = _window_sum_pure(xr * xr, size) * (alpha / size) + k
    return xr * den.pow(-beta), den


def lrn_backward_pure(g, xr, den, size, alpha, beta):
    """dL/da from the saved (a, D), out of place: the body of the fused backward.
    D^-beta is recomputed here, fused into the same kernel, rather than kept from forward."""
    r = den.pow(-beta)
    window = _window_sum_pure(g * xr * r / den, size)
    return g * r - (2.0 * alpha * beta / size) * xr * window


def _lrn_forward_eager(xr, size, alpha, beta, k):
    sq = xr * xr
    den = _window_sum(sq, size, torch.empty_like(sq)).mul_(alpha / size).add_(k)
    return _neg_pow(den, beta, out=sq).mul_(xr), den      # the squares' buffer becomes b


def _lrn_backward_eager(g, xr, den, size, alpha, beta):
    r = _neg_pow(den, beta, out=torch.empty_like(den))    # two vector ops for beta = 3/4
    t = torch.mul(g, xr).mul_(r).div_(den)                # g_j a_j D_j^(-beta-1)
    window = _window_sum(t, size, torch.empty_like(t))    # D stays intact for a retained graph
    return r.mul_(g).addcmul_(xr, window, value=-2.0 * alpha * beta / size)


# What the fused LRN did in this process: the kernel the last LRN call ran ("fused",
# "eager"; None before the first), the graphs compiled, and why compiling failed.
_STATUS = {"kernel": None, "graphs": {"forward": 0, "backward": 0}, "failure": None, "taken": False}
_FUSED = {}
KERNEL_ENV = "ALEXNET_MP_LRN"       # auto (fused on CUDA, eager elsewhere), fused (any device), eager


def _counted(which):
    """Inductor, counting the graphs it is given: one per device is the design (see `_fused`)."""
    inductor = torch._dynamo.lookup_backend("inductor")

    def backend(gm, example_inputs):
        _STATUS["graphs"][which] += 1
        return inductor(gm, example_inputs)
    return backend


def _fused(fn, which):
    """`fn` compiled once for every batch size and both LRN layers.

    Every tensor goes in as a detached, contiguous (rows, channels of one group)
    matrix with both sizes marked dynamic, under no_grad: the column count, the
    batch, the map size, requires_grad and grad mode then never reach dynamo's
    guards, which left alone compiled 4 forward and 3 backward graphs for grouped
    training, evaluation and the one-column net, near the limit of 8 past which
    `fullgraph=True` raises. What remains is one graph per device, dtype and state
    of torch's global flags a run keeps (thread count, deterministic algorithms).
    """
    compiled = torch.compile(fn, fullgraph=True, backend=_counted(which))

    def call(*args):
        shape = args[0].shape
        flat = []
        for a in args:
            if isinstance(a, torch.Tensor):
                a = a.detach().reshape(-1, shape[-1]).contiguous()
                for dim in (0, 1):
                    torch._dynamo.maybe_mark_dynamic(a, dim)
            flat.append(a)
        with torch.no_grad():
            out = compiled(*flat)
        return tuple(o.reshape(shape) for o in out) if isinstance(out, tuple) else out.reshape(shape)
    return call


def fused_lrn_kernels():
    """(forward, backward) compiled by torch.compile: one kernel each instead of
    about 22 elementwise launches, which is what the LRN costs on a GPU. Built on
    first use, so importing the package never starts a compiler."""
    if "forward" not in _FUSED:
        _FUSED["forward"] = _fused(lrn_forward_pure, "forward")
        _FUSED["backward"] = _fused(lrn_backward_pure, "backward")
    return _FUSED["forward"], _FUSED["backward"]


def lrn_kernel_status():
    """{"kernel": the kernel the last LRN call ran ("fused", "eager"; None before the first),
    "compiles": graphs compiled in this process, "graphs": {"forward": n, "backward": m},
    "failure": why the fused kernel could not be compiled, or None}."""
    graphs = dict(_STATUS["graphs"])
    return {"kernel": _STATUS["kernel"], "compiles": sum(graphs.values()), "graphs": graphs,
            "failure": _STATUS["failure"]}


def take_lrn_failure():
    """The compile failure's one line, the first time it is asked for after it happened; else None.
    A training loop's log step calls it, so that the run's own log says once which kernel runs."""
    if _STATUS["failure"] is None or _STATUS["taken"]:
        return None
    _STATUS["taken"] = True
    return _STATUS["failure"]


def _fail(error):
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    _STATUS["failure"] = (f"the fused LRN could not be compiled ({type(error).__name__}: {first}); "
                          f"the eager LRN kernel runs instead (the same arithmetic, more launches)")
    warnings.warn(_STATUS["failure"])


def _fused_or_eager(which):
    """The fused kernel, or for good the eager one where this machine cannot compile it
    (no Triton, no C compiler): said once by `warnings`, and by `take_lrn_failure`."""
    eager = _lrn_forward_eager if which == 0 else _lrn_backward_eager

    def call(*args):
        if _STATUS["failure"] is None:
            try:
                out = fused_lrn_kernels()[which](*args)
                _STATUS["kernel"] = "fused"
                return out
            except torch.cuda.OutOfMemoryError:
                raise           # not the compiler's: the eager kernel needs more memory still
            except Exception as e:    # the compiler's failures have no common type
                _fail(e)
        _STATUS["kernel"] = "eager"
        return eager(*args)
    return call


def _kernels(x):
    """Which LRN arithmetic runs: the pure one inside an outer torch.compile (it fuses
    it with its neighbours), the fused one on CUDA, the in-place eager one on the CPU
    (faster there than the compiled one: its cost is memory traffic, not launches).
    ALEXNET_MP_LRN=fused compiles it on any device (inductor's CPU backend: the tests),
    ALEXNET_MP_LRN=eager never."""
    if torch.compiler.is_compiling():
        return lrn_forward_pure, lrn_backward_pure
    if not compiles_lrn(x.device) or is_fake(x):
        _STATUS["kernel"] = "eager"     # fake tensors (placement tests) have nothing to compile for
        return _lrn_forward_eager, _lrn_backward_eager
    return _fused_or_eager(0), _fused_or_eager(1)


def compiles_lrn(device):
    """Whether the LRN on `device` runs the torch.compile'd kernel: on CUDA by default (Triton),
    never on the CPU or Apple's GPU (MPS) unless ALEXNET_MP_LRN=fused asks for it, never with
    ALEXNET_MP_LRN=eager."""
    mode = os.environ.get(KERNEL_ENV, "auto")
    if mode not in ("auto", "fused", "eager"):
        raise ValueError(f"{KERNEL_ENV}={mode}: choose auto, fused or eager")
    return mode == "fused" or (mode == "auto" and torch.device(device).type == "cuda")


class _ColumnLRN(torch.autograd.Function):
    """LRN with the closed-form backward. It keeps x and the denominator D for the
    backward, which recomputes r = D^-beta (two vector ops for beta = 3/4) rather
    than keep a second activation-sized tensor (0.23 GiB at batch 128), and needs
    one window sum, not two.

    With D_j = k + (alpha/n) S_j and b_j = a_j D_j^-beta:
    dL/da_i = g_i D_i^-beta - 2 (alpha/n) beta a_i * sum_{j: i in window(j)} g_j a_j D_j^(-beta-1)
    The window is symmetric, so the last sum is the same window sum as S.
    """

    @staticmethod
    def forward(ctx, x, columns, size, alpha, beta, k):
        forward, ctx.backward_kernel = _kernels(x)
        xr = _rows(x, columns)
        y, den = forward(xr, size, alpha, beta, k)
        ctx.save_for_backward(xr, den)
        ctx.params = (size, alpha, beta, x.shape)
        return _unrows(y, x.shape)

    @staticmethod
    def backward(ctx, grad):
        xr, den = ctx.saved_tensors
        size, alpha, beta, shape = ctx.params
        dx = ctx.backward_kernel(_rows(grad, xr.shape[1]), xr, den, size, alpha, beta)
        return _unrows(dx, shape), None, None, None, None, None


def column_lrn(x, columns, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """LRN of (N, C, H, W) within each of `columns` equal channel groups (§3.3, spec §1).

    Under autocast it runs in float32 whatever the input: in bfloat16 the squared
    window sum and its 3/4 power lose about 1.5% of the output (measured on the CPU).
    """
    if x.shape[1] % columns:
        raise ValueError(f"{x.shape[1]} channels do not split into {columns} columns")
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return _ColumnLRN.apply(x.float(), columns, size, alpha, beta, k)
    return _ColumnLRN.apply(x, columns, size, alpha, beta, k)


class ColumnLRN(nn.Module):
    def __init__(self, columns, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        self.columns, self.size, self.alpha, self.beta, self.k = columns, size, alpha, beta, k

    def forward(self, x):
        return column_lrn(x, self.columns, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"columns={self.columns}, size={self.size}, alpha={self.alpha}/size, beta={self.beta}, k={self.k}"


def stream_seed(seed, replica, column, step=None, device_index=None):
    """The seed of one column's random stream: distinct for every (seed, replica, column).

    With `step`: the stream that replaces it from that step on, where a resumed run
    cannot restore the saved state (saved on another device type); with `device_index`
    too, that CUDA device's global generator on the process holding `column`. They are
    spawn keys, not more entropy words: SeedSequence pads short entropy with zeros, so
    [seed, replica, column, 0] would repeat [seed, replica, column]'s stream."""
    spawn = () if step is None else (step,) if device_index is None else (step, 1 + device_index)
    words = np.random.SeedSequence([seed % 2**64, replica, column], spawn_key=spawn).generate_state(2, np.uint32)
    return int(words[0]) << 31 ^ int(words[1])


_STATE_SIZES = {}


def state_fits(state, device):
    """Whether a generator on `device` can take `state`: a generator's state is its
    device type's own (a CPU mt19937's is 5,056 bytes, a CUDA Philox's 16)."""
    kind = torch.device(device).type
    if kind not in _STATE_SIZES:
        _STATE_SIZES[kind] = torch.Generator(device=device).get_state().numel()
    return isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.numel() == _STATE_SIZES[kind]


class ColumnStreams:
    """One random stream per column, seeded from (seed, replica, column).

    Seeding the global generators is not enough: `torch.manual_seed` seeds every
    CUDA device alike, so two columns on two GPUs, drawing the same calls, would
    drop the same units (fc6's unit i in column 0 exactly when unit i in column 1).
    Each column draws from its own generator instead, in every placement, so the
    grouped, two-device and per-rank nets draw the same masks from the same seed.
    Generators are made on first use on the device of the tensor they fill.
    A saved state is a generator's state, or the seed (an int) of one not drawn from yet.
    """

    def __init__(self, seed, replica, columns):
        self.seed, self.replica = seed, replica
        self.seeds = {c: stream_seed(seed, replica, c) for c in columns}
        self.generators, self._pending, self._step = {}, {}, 0

    def generator(self, column, device):
        g = self.generators.get(column)
        if g is None or g.device != device:
            g = torch.Generator(device=device)
            s = self._pending.pop(column, self.seeds[column])
            if not isinstance(s, int) and not state_fits(s, device):     # its device was unknown at load
                warnings.warn(f"column {column}'s dropout stream was saved on another device type than "
                              f"{device}: reseeded from (seed, replica, column, step {self._step})")
                s = stream_seed(self.seed, self.replica, column, self._step)
            _restore(g, s)
            self.generators[column] = g
        return g

    def state_dict(self):
        states = {c: g.get_state() for c, g in self.generators.items()}
        states.update(self._pending)
        return {str(c): s for c, s in states.items()}

    def load_state_dict(self, state, step=0, devices=None):
        """Restore the saved streams of this process's columns; returns the columns reseeded.

        A state saved on another device type cannot be restored (a CUDA generator's
        16 bytes are no CPU generator's state): such a column draws from step `step`
        on from the stream of (seed, replica, column, step) instead, the same on every
        resume. `devices` ({column: device}) says where each column will draw, so that
        this is found now; otherwise at the column's first draw."""
        self._step, reseeded = step, []
        for key, s in state.items():
            c = int(key)
            if c not in self.seeds:
                continue
            g = self.generators.get(c)
            device = g.device if g is not None else (devices or {}).get(c)
            if not isinstance(s, int) and device is not None and not state_fits(s, device):
                s = stream_seed(self.seed, self.replica, c, step)
                reseeded.append(c)
            if g is not None:
                _restore(g, s)
            else:
                self._pending[c] = s
        return reseeded


def _restore(generator, state):
    if isinstance(state, int):
        generator.manual_seed(state)
    else:
        generator.set_state(state)


class PaperDropout(nn.Module):
    """Dropout as §4.2 states it: zero with probability p while training, no rescale;
    at test time keep every output and multiply by (1 - p).

    PyTorch's inverted dropout (x 1/(1-p) at train, x1 at test) would feed fc7 and
    fc8 twice the paper's training-time scale (spec §1). p = 0 is the identity.
    The input holds `columns` (their indices, in order along dim 1); each column's
    units are dropped from that column's own stream.
    """

    def __init__(self, p=0.5, streams=None, columns=(0,)):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p={p} is outside [0, 1): use 0 to disable it")
        self.p, self.columns = p, tuple(columns)
        self.streams = streams or ColumnStreams(torch.initial_seed(), 0, self.columns)

    def forward(self, x):
        if self.p == 0.0:
            return x
        if not self.training:
            return x * (1.0 - self.p)
        mask = torch.empty_like(x)
        width = x.shape[-1] // len(self.columns)
        for i, c in enumerate(self.columns):
            mask.narrow(-1, i * width, width).bernoulli_(1.0 - self.p, generator=self.streams.generator(c, x.device))
        return x * mask

    def extra_repr(self):
        return f"p={self.p}, paper form (no rescale at train, x{1 - self.p} at test), columns={self.columns}"


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
    """(b, D, D^-beta) of rows `xr`, out of place: the body of the fused CUDA forward."""
    den = _window_sum_pure(xr * xr, size) * (alpha / size) + k
    r = den.pow(-beta)
    return xr * r, den, r


def lrn_backward_pure(g, xr, den, r, size, alpha, beta):
    """dL/da from the saved (a, D, D^-beta), out of place: the body of the fused CUDA backward."""
    window = _window_sum_pure(g * xr * r / den, size)
    return g * r - (2.0 * alpha * beta / size) * xr * window


def _lrn_forward_eager(xr, size, alpha, beta, k):
    r = xr * xr
    den = _window_sum(r, size, torch.empty_like(r)).mul_(alpha / size).add_(k)
    _neg_pow(den, beta, out=r)                  # the squares' buffer now holds r
    return xr * r, den, r


def _lrn_backward_eager(g, xr, den, r, size, alpha, beta):
    t = torch.mul(g, xr).mul_(r).div_(den)      # g_j a_j D_j^(-beta-1)
    window = _window_sum(t, size, torch.empty_like(t))   # D stays intact for a retained graph
    dx = torch.mul(g, r, out=t)
    return dx.addcmul_(xr, window, value=-2.0 * alpha * beta / size)


_FUSED = {}


def fused_lrn_kernels():
    """(forward, backward) compiled by torch.compile: one kernel each instead of
    about 22 elementwise launches, which is what the LRN costs on a GPU. Built on
    first use, so importing the package never starts a compiler."""
    if "forward" not in _FUSED:
        _FUSED["forward"] = torch.compile(lrn_forward_pure, fullgraph=True)
        _FUSED["backward"] = torch.compile(lrn_backward_pure, fullgraph=True)
    return _FUSED["forward"], _FUSED["backward"]


def _fused_or_eager(which):
    """The fused kernel, or the eager one, with one warning, where this machine cannot
    compile it (no Triton, no C compiler). ALEXNET_MP_FUSED_LRN=0 skips the compiler."""
    eager = _lrn_forward_eager if which == 0 else _lrn_backward_eager

    def call(*args):
        if not _FUSED.get("broken") and os.environ.get("ALEXNET_MP_FUSED_LRN", "1") != "0":
            try:
                return fused_lrn_kernels()[which](*args)
            except Exception as e:    # the compiler's failures have no common type
                _FUSED["broken"] = True
                warnings.warn(f"the fused LRN could not be compiled ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:100] if str(e) else ''}); using the eager kernel")
        return eager(*args)
    return call


def _kernels(x):
    """Which LRN arithmetic runs: the pure one inside an outer torch.compile (it fuses
    it with its neighbours), the fused one on CUDA, the in-place eager one on the CPU
    (faster there than the compiled one: its cost is memory traffic, not launches)."""
    if torch.compiler.is_compiling():
        return lrn_forward_pure, lrn_backward_pure
    if x.is_cuda and not is_fake(x):        # fake tensors (placement tests) have nothing to compile for
        return _fused_or_eager(0), _fused_or_eager(1)
    return _lrn_forward_eager, _lrn_backward_eager


class _ColumnLRN(torch.autograd.Function):
    """LRN with the closed-form backward. It keeps x, the denominator D and
    r = D^-beta for the backward, which then needs one window sum, not two.

    With D_j = k + (alpha/n) S_j and b_j = a_j D_j^-beta:
    dL/da_i = g_i D_i^-beta - 2 (alpha/n) beta a_i * sum_{j: i in window(j)} g_j a_j D_j^(-beta-1)
    The window is symmetric, so the last sum is the same window sum as S.
    """

    @staticmethod
    def forward(ctx, x, columns, size, alpha, beta, k):
        forward, ctx.backward_kernel = _kernels(x)
        xr = _rows(x, columns)
        y, den, r = forward(xr, size, alpha, beta, k)
        ctx.save_for_backward(xr, den, r)
        ctx.params = (size, alpha, beta, x.shape)
        return _unrows(y, x.shape)

    @staticmethod
    def backward(ctx, grad):
        xr, den, r = ctx.saved_tensors
        size, alpha, beta, shape = ctx.params
        dx = ctx.backward_kernel(_rows(grad, xr.shape[1]), xr, den, r, size, alpha, beta)
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


def stream_seed(seed, replica, column):
    """The seed of one column's random stream: distinct for every (seed, replica, column)."""
    words = np.random.SeedSequence([seed % 2**64, replica, column]).generate_state(2, np.uint32)
    return int(words[0]) << 31 ^ int(words[1])


class ColumnStreams:
    """One random stream per column, seeded from (seed, replica, column).

    Seeding the global generators is not enough: `torch.manual_seed` seeds every
    CUDA device alike, so two columns on two GPUs, drawing the same calls, would
    drop the same units (fc6's unit i in column 0 exactly when unit i in column 1).
    Each column draws from its own generator instead, in every placement, so the
    grouped, two-device and per-rank nets draw the same masks from the same seed.
    Generators are made on first use on the device of the tensor they fill.
    """

    def __init__(self, seed, replica, columns):
        self.seeds = {c: stream_seed(seed, replica, c) for c in columns}
        self.generators, self._pending = {}, {}

    def generator(self, column, device):
        g = self.generators.get(column)
        if g is None or g.device != device:
            g = torch.Generator(device=device).manual_seed(self.seeds[column])
            if column in self._pending:
                g.set_state(self._pending.pop(column))
            self.generators[column] = g
        return g

    def state_dict(self):
        states = {c: g.get_state() for c, g in self.generators.items()}
        states.update(self._pending)
        return {str(c): s for c, s in states.items()}

    def load_state_dict(self, state):
        for key, s in state.items():
            c = int(key)
            if c in self.generators:
                self.generators[c].set_state(s)
            elif c in self.seeds:
                self._pending[c] = s


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

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
import torch
from torch import nn


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


class _ColumnLRN(torch.autograd.Function):
    """Fused LRN with the closed-form backward. It keeps x, the denominator D and
    r = D^-beta for the backward, which then needs one window sum, not two.

    With D_j = k + (alpha/n) S_j and b_j = a_j D_j^-beta:
    dL/da_i = g_i D_i^-beta - 2 (alpha/n) beta a_i * sum_{j: i in window(j)} g_j a_j D_j^(-beta-1)
    The window is symmetric, so the last sum is the same window sum as S.
    """

    @staticmethod
    def forward(ctx, x, columns, size, alpha, beta, k):
        xr = _rows(x, columns)
        r = xr * xr
        den = _window_sum(r, size, torch.empty_like(r)).mul_(alpha / size).add_(k)
        _neg_pow(den, beta, out=r)                  # the squares' buffer now holds r
        y = xr * r
        ctx.save_for_backward(xr, den, r)
        ctx.params = (size, alpha, beta, x.shape)
        return _unrows(y, x.shape)

    @staticmethod
    def backward(ctx, grad):
        xr, den, r = ctx.saved_tensors
        size, alpha, beta, shape = ctx.params
        g = _rows(grad, xr.shape[1])
        t = torch.mul(g, xr).mul_(r).div_(den)      # g_j a_j D_j^(-beta-1)
        window = _window_sum(t, size, torch.empty_like(t))   # D stays intact for a retained graph
        dx = torch.mul(g, r, out=t)
        dx.addcmul_(xr, window, value=-2.0 * alpha * beta / size)
        return _unrows(dx, shape), None, None, None, None, None


def column_lrn(x, columns, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """LRN of (N, C, H, W) within each of `columns` equal channel groups (§3.3, spec §1)."""
    if x.shape[1] % columns:
        raise ValueError(f"{x.shape[1]} channels do not split into {columns} columns")
    return _ColumnLRN.apply(x, columns, size, alpha, beta, k)


class ColumnLRN(nn.Module):
    def __init__(self, columns, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        self.columns, self.size, self.alpha, self.beta, self.k = columns, size, alpha, beta, k

    def forward(self, x):
        return column_lrn(x, self.columns, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"columns={self.columns}, size={self.size}, alpha={self.alpha}/size, beta={self.beta}, k={self.k}"


class PaperDropout(nn.Module):
    """Dropout as §4.2 states it: zero with probability p while training, no rescale;
    at test time keep every output and multiply by (1 - p).

    PyTorch's inverted dropout (x 1/(1-p) at train, x1 at test) would feed fc7 and
    fc8 twice the paper's training-time scale (spec §1). p = 0 is the identity.
    """

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p={p} is outside [0, 1): use 0 to disable it")
        self.p = p

    def forward(self, x):
        if self.p == 0.0:
            return x
        if self.training:
            return x * torch.empty_like(x).bernoulli_(1.0 - self.p)
        return x * (1.0 - self.p)

    def extra_repr(self):
        return f"p={self.p}, paper form (no rescale at train, x{1 - self.p} at test)"

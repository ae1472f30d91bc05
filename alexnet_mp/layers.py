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


def _window_sum(t, size):
    """Sum over a centred channel window of `size`, clipped at the column edge.

    `t` is (N, G, C, H, W): G columns of C channels each; dim 2 is summed.
    """
    half = size // 2
    padded = nn.functional.pad(t, (0, 0, 0, 0, half, size - 1 - half))
    c = t.shape[2]
    out = padded[:, :, 0:c].clone()
    for shift in range(1, size):
        out += padded[:, :, shift:shift + c]
    return out


class _ColumnLRN(torch.autograd.Function):
    """Fused LRN with the closed-form backward, so autograd keeps two tensors, not six.

    With d_j = k + (alpha/n) * S_j and b_j = a_j d_j^-beta:
    dL/da_i = g_i d_i^-beta - 2 (alpha/n) beta a_i * sum_{j: i in window(j)} g_j a_j d_j^(-beta-1)
    The window is symmetric, so the last sum is the same window sum as S.
    """

    @staticmethod
    def forward(ctx, x, columns, size, alpha, beta, k):
        n, c, h, w = x.shape
        xg = x.reshape(n, columns, c // columns, h, w)
        d = _window_sum(xg * xg, size).mul_(alpha / size).add_(k)
        y = xg * d.pow(-beta)
        ctx.save_for_backward(xg, d)
        ctx.params = (size, alpha, beta)
        return y.reshape(n, c, h, w)

    @staticmethod
    def backward(ctx, grad):
        xg, d = ctx.saved_tensors
        size, alpha, beta = ctx.params
        g = grad.reshape(xg.shape)
        dpow = d.pow(-beta)
        t = g * xg * dpow / d
        dx = g * dpow - (2.0 * alpha * beta / size) * xg * _window_sum(t, size)
        return dx.reshape(grad.shape), None, None, None, None, None


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

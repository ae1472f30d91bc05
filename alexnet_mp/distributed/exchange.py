"""How the two columns exchange activations: the only module of the network that
knows about devices and processes. The model calls three methods of an exchange:

* `share(hs, point)`: before conv3, fc6, fc7 and fc8 (§3.2, Figure 2). Each column
  gets every column's activations (column 0 first, along dim 1). Each column then
  computes its own half of the next layer, so a column's activations feed both
  halves, and their gradient is the SUM of what both halves send back.
* `join(hs, point, widths)`: the columns' halves of one output side by side (the
  logits: each column computed its own classes of fc8). Whatever reads the joined
  tensor (the loss) is one computation, so each column's gradient is just its own
  slice of the joined tensor's gradient.
* `collect(slices, sizes, writer_only)`: the full canonical tensor from the
  columns' dim-0 slices (for checkpoints).

`DeviceExchange` holds both columns in one process; autograd's cross-device
copies already sum gradients. `ProcessExchange` holds one column per process;
its autograd functions below do the gathering, in a mirrored pair. Averaging
gradients over data-parallel replicas is not an exchange between columns: it
lives in `alexnet_mp.distributed.parallel`.
"""
import contextlib
import time

import torch
import torch.distributed as dist
from torch.nn import functional as F

from alexnet_mp.distributed.compat import reduce_scatter
from alexnet_mp.model.arch import COLUMNS


class DeviceExchange:
    """Column c on devices[c], in one process; the joined logits live on devices[0].

    Every tensor that crosses devices is recorded in `self.crossings` as
    (exchange point, from device, to device) when `record=True`.
    """

    columns = COLUMNS

    def __init__(self, devices, record=False):
        if len(devices) != COLUMNS:
            raise ValueError(f"{len(devices)} devices given: the two-device placement needs exactly 2")
        self.devices = [torch.device(d) for d in devices]
        self.local_columns = list(enumerate(self.devices))
        self.crossings = [] if record else None

    def _move(self, t, device, point):
        if t.device != device:
            if self.crossings is not None:
                self.crossings.append((point, str(t.device), str(device)))
            # Asynchronous only into a GPU: a GPU-to-CPU copy returns before the bytes land,
            # and the CPU op that reads them next would not wait for them.
            t = t.to(device, non_blocking=device.type == "cuda")
        return t

    def share(self, hs, point):
        return [torch.cat([self._move(h, dev, point) for h in hs], 1) for dev in self.devices]

    def join(self, hs, point, widths):
        return torch.cat([self._move(h, self.devices[0], point) for h in hs], 1)

    def collect(self, slices, sizes, writer_only=False):
        return torch.cat([s.cpu() for s in slices], 0)


def backward_reduction(backend):
    """How the gathers' backward sums the two columns' gradients of a shared activation.

    Each column needs only its own slice of the sum. NCCL's reduce-scatter sends just
    that: half the bytes of an all-reduce followed by a slice. gloo keeps the all-reduce,
    its long-tested path on the CPU (it has a reduce-scatter too; `ProcessExchange`
    takes `reduction=` to run it, which the tests do).
    """
    return "reduce_scatter" if backend == "nccl" else "all_reduce"


def _channels_last(t):
    """View a (N, C) or (N, C, H, W) activation with its channels as the last dim.
    The model keeps conv activations channels_last, so this is usually free, and
    the gathered result stays channels_last for the convs and pools after it."""
    return t.permute(0, 2, 3, 1) if t.dim() == 4 else t


def _channels_first(t):
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t


@contextlib.contextmanager
def _timed(exchange):
    # The benchmark splits a step into compute and exchange: it sets `seconds` to 0.0
    # and reads the wall time the pair's collectives took (waiting for the other column included).
    if exchange.seconds is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        exchange.seconds += time.perf_counter() - start


def _gather(x, exchange):
    own = _channels_last(x).contiguous()
    parts = [torch.empty_like(own) for _ in range(COLUMNS)]
    with _timed(exchange):
        dist.all_gather(parts, own, group=exchange.pair)
    return _channels_first(torch.cat(parts, -1))


def column_chunks(grad):
    """The gradient of a gathered activation, (N, 2C[, H, W]), as (2, N[, H, W], C): chunk c
    is column c's channels, contiguous, as a reduce-scatter splits its input."""
    g = _channels_last(grad)
    return g.unflatten(-1, (COLUMNS, g.shape[-1] // COLUMNS)).movedim(-2, 0).contiguous()


class _GatherSumBack(torch.autograd.Function):
    """forward: gather columns; backward: sum the columns' gradients, keep own slice."""

    @staticmethod
    def forward(ctx, x, exchange):
        ctx.exchange, ctx.width = exchange, x.shape[1]
        return _gather(x, exchange)

    @staticmethod
    def backward(ctx, grad):
        ex = ctx.exchange
        if ex.reduction == "reduce_scatter":
            chunks = column_chunks(grad)
            own = torch.empty_like(chunks[0])
            with _timed(ex):
                reduce_scatter(own, chunks.flatten(0, 1), ex.pair)    # chunks end to end
            return _channels_first(own), None
        summed = _channels_last(grad).clone(memory_format=torch.contiguous_format)
        with _timed(ex):
            dist.all_reduce(summed, group=ex.pair)
        return _channels_first(summed).narrow(1, ex.column * ctx.width, ctx.width), None


class _GatherKeepBack(torch.autograd.Function):
    """forward: gather columns' (N, widths[c]) outputs side by side; backward: keep own slice.

    all_gather needs equal sizes, so a column with fewer classes (an odd class count)
    pads its slice with zero columns, and the padding is cut off after the gather."""

    @staticmethod
    def forward(ctx, x, exchange, widths):
        ctx.start = sum(widths[:exchange.column])
        ctx.width = widths[exchange.column]
        own = F.pad(x, (0, max(widths) - x.shape[1])).contiguous()
        parts = [torch.empty_like(own) for _ in range(COLUMNS)]
        with _timed(exchange):
            dist.all_gather(parts, own, group=exchange.pair)
        return torch.cat([p[:, :w] for p, w in zip(parts, widths)], 1)

    @staticmethod
    def backward(ctx, grad):
        return grad.narrow(1, ctx.start, ctx.width), None, None


class ProcessExchange:
    """One column per process: this rank's `column` of replica `replica`, joined to the
    other column through `pair`, the process group of the two (see
    `alexnet_mp.distributed.parallel.Topology`, which makes the groups). `seconds`: None,
    or the wall time the activations' collectives have taken since a benchmark set it to 0."""

    columns = COLUMNS

    def __init__(self, device, pair, column, replica=0, reduction=None):
        self.device = torch.device(device)
        self.pair, self.column, self.replica = pair, column, replica
        self.local_columns = [(column, self.device)]
        self.reduction = reduction or backward_reduction(dist.get_backend(pair))
        self.seconds = None

    def share(self, hs, point):
        (h,) = hs
        return [_GatherSumBack.apply(h, self)]

    def join(self, hs, point, widths):
        (h,) = hs
        return _GatherKeepBack.apply(h, self, tuple(widths))

    def collect(self, slices, sizes, writer_only=False):
        """The canonical tensor from both columns' rows (`sizes` of them), on every rank of
        the pair; `writer_only`: on global rank 0 only, and no other rank gathers anything
        (the other replicas hold the same weights)."""
        (s,) = slices
        own = s.contiguous()
        if own.shape[0] < max(sizes):          # equal sizes for the collective: pad fc8's rows
            own = torch.cat([own, own.new_zeros((max(sizes) - own.shape[0],) + own.shape[1:])])
        if writer_only:
            if self.replica != 0:
                return None
            parts = [torch.empty_like(own) for _ in range(COLUMNS)] if self.column == 0 else None
            dist.gather(own, parts, group=self.pair, group_dst=0)
            if parts is None:
                return None
        else:
            parts = [torch.empty_like(own) for _ in range(COLUMNS)]
            dist.all_gather(parts, own, group=self.pair)
        return torch.cat([p[:n].cpu() for p, n in zip(parts, sizes)], 0)

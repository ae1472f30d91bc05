"""How the two columns exchange activations: the only module that knows about
devices and processes. The model calls three methods of an exchange object:

* `share(hs, point)`: before conv3, fc6, fc7. Each column gets every column's
  activations (column 0 first, along dim 1). Each column then computes its own
  half of the next layer, so a column's activations feed both halves, and their
  gradient is the SUM of what both halves send back.
* `to_head(hs, point)`: before fc8, which is kept whole (spec §1). The head and
  the loss after it are one computation, so each column's gradient is just its
  own slice of the head's input gradient.
* `collect(slices)`: the full canonical tensor from the columns' dim-0 slices.

`DeviceExchange` holds both columns in one process; autograd's cross-device
copies already sum gradients. `ProcessExchange` holds one column per process;
its autograd functions below do the gathering, in a mirrored pair.
"""
import torch
import torch.distributed as dist

COLUMNS = 2


class DeviceExchange:
    """Column c on devices[c], in one process; fc8 lives on devices[0].

    Every tensor that crosses devices is recorded in `self.crossings` as
    (exchange point, from device, to device) when `record=True`.
    """

    columns = COLUMNS

    def __init__(self, devices, record=False):
        if len(devices) != COLUMNS:
            raise ValueError(f"{len(devices)} devices given: the two-device placement needs exactly 2")
        self.devices = [torch.device(d) for d in devices]
        self.local_columns = list(enumerate(self.devices))
        self.head_device = self.devices[0]
        self.crossings = [] if record else None

    def _move(self, t, device, point):
        if t.device != device:
            if self.crossings is not None:
                self.crossings.append((point, str(t.device), str(device)))
            t = t.to(device, non_blocking=True)
        return t

    def share(self, hs, point):
        return [torch.cat([self._move(h, dev, point) for h in hs], 1) for dev in self.devices]

    def to_head(self, hs, point):
        return torch.cat([self._move(h, self.head_device, point) for h in hs], 1)

    def collect(self, slices):
        return torch.cat([s.cpu() for s in slices], 0)


def _channels_last(t):
    """View a (N, C) or (N, C, H, W) activation with its channels as the last dim.
    The model keeps conv activations channels_last, so this is usually free, and
    the gathered result stays channels_last for the convs and pools after it."""
    return t.permute(0, 2, 3, 1) if t.dim() == 4 else t


def _channels_first(t):
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t


def _gather(x, group):
    own = _channels_last(x).contiguous()
    parts = [torch.empty_like(own) for _ in range(COLUMNS)]
    dist.all_gather(parts, own, group=group)
    return _channels_first(torch.cat(parts, -1))


def _own_slice(grad, column, width):
    return grad.narrow(1, column * width, width)


class _GatherSumBack(torch.autograd.Function):
    """forward: gather columns; backward: sum the columns' gradients, keep own slice."""

    @staticmethod
    def forward(ctx, x, group, column):
        ctx.group, ctx.column, ctx.width = group, column, x.shape[1]
        return _gather(x, group)

    @staticmethod
    def backward(ctx, grad):
        summed = _channels_last(grad).clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed, group=ctx.group)
        return _own_slice(_channels_first(summed), ctx.column, ctx.width), None, None


class _GatherKeepBack(torch.autograd.Function):
    """forward: gather columns; backward: keep own slice."""

    @staticmethod
    def forward(ctx, x, group, column):
        ctx.column, ctx.width = column, x.shape[1]
        return _gather(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _own_slice(grad, ctx.column, ctx.width), None, None


class ProcessExchange:
    """One column per process. Ranks (2r, 2r+1) are replica r's two columns.

    The process group must already be initialised (torchrun + init_process_group).
    Every rank creates every subgroup, in the same order, as torch.distributed
    requires.
    """

    columns = COLUMNS

    def __init__(self, device):
        world, rank = dist.get_world_size(), dist.get_rank()
        if world % COLUMNS:
            raise ValueError(f"world size {world} is not a multiple of 2: the two columns need "
                             f"2 ranks per replica (launch with --nproc_per_node=2 or an even count)")
        self.column, self.replica, self.replicas = rank % COLUMNS, rank // COLUMNS, world // COLUMNS
        pairs = [dist.new_group([COLUMNS * r + c for c in range(COLUMNS)]) for r in range(self.replicas)]
        same_column = [dist.new_group(list(range(c, world, COLUMNS))) for c in range(COLUMNS)]
        self.pair = pairs[self.replica]
        self.column_group = same_column[self.column]
        self.device = torch.device(device)
        self.local_columns = [(self.column, self.device)]
        self.head_device = self.device

    def share(self, hs, point):
        (h,) = hs
        return [_GatherSumBack.apply(h, self.pair, self.column)]

    def to_head(self, hs, point):
        (h,) = hs
        return _GatherKeepBack.apply(h, self.pair, self.column)

    def collect(self, slices):
        (s,) = slices
        parts = [torch.empty_like(s) for _ in range(COLUMNS)]
        dist.all_gather(parts, s.contiguous(), group=self.pair)
        return torch.cat([p.cpu() for p in parts], 0)

    def _average(self, tensors, group, size):
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, group=group)
        flat.div_(size)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def average_gradients(self, model):
        """Data parallel: same-column ranks average; fc8, replicated on every rank, averages over all."""
        column = [p.grad for p in model.columns.parameters() if p.grad is not None]
        head = [p.grad for p in model.fc8.parameters() if p.grad is not None]
        if self.replicas > 1:
            self._average(column, self.column_group, self.replicas)
        self._average(head, None, dist.get_world_size())

    def sync_parameters(self, model):
        """Make every replica start from replica 0's weights, whatever each rank's RNG did."""
        with torch.no_grad():
            for p in model.columns.parameters():
                dist.broadcast(p, src=self.column, group=self.column_group)
            for p in model.fc8.parameters():
                dist.broadcast(p, src=0)

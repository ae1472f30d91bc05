"""BatchNorm after each convolution (ModelConfig.batch_norm): later work, not the paper's (Ioffe and
Szegedy, 2015), kept apart from `alexnet_mp.model.layers`, which holds the paper's own pieces."""
from torch import nn


class ColumnBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d (ModelConfig.batch_norm; later work, not the paper's) without its batch counter.

    Its statistics are per channel, so over both columns' maps (the grouped net) it is per
    column already. torch reads `num_batches_tracked` only when momentum is None (a cumulative
    average); with the fixed momentum 0.1 the count carries nothing, so it is dropped, and the
    module's state is exactly its canonical tensors (weight, bias, running_mean, running_var).
    """

    def __init__(self, maps, device=None):
        super().__init__(maps, momentum=0.1, device=device)
        self.num_batches_tracked = None

    def _load_from_state_dict(self, *args, **kwargs):
        # _NormBase's would add the counter to a state dict saved without torch's version metadata.
        nn.Module._load_from_state_dict(self, *args, **kwargs)

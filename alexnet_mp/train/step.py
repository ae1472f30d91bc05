"""One training step (§5): forward, the loss in float32, backward, the paper's update.

The only implementation of a step: the training loop, the benchmark and the
study's time estimate all run this one, so what they time is what trains.
"""
from torch.nn import functional as F

from alexnet_mp.numerics import autocast


def train_step(model, optimizer, x, y, amp=None):
    """Forward, backward (DDP averages gradients while it runs), update. Returns the loss
    and the logits as tensors: reading them would wait for the device."""
    with autocast(x.device, amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y.to(logits.device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()

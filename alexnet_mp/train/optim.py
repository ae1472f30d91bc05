"""The paper's update rule and learning-rate schedule (§5, spec §3).

    v <- 0.9 v - 0.0005 e w - e grad
    w <- w + v

With a constant learning rate e this is torch.optim.SGD(momentum=0.9,
weight_decay=5e-4). After e changes the two differ: here the velocity keeps
the steps taken at the old rate, while torch's buffer is rescaled by the new
rate at once.
"""
import torch


class PaperSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=5e-4):
        if lr <= 0:
            raise ValueError(f"lr={lr} must be positive")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                v = self.state[p].get("velocity")
                if v is None:
                    v = self.state[p]["velocity"] = torch.zeros_like(p)
                v.mul_(momentum).add_(p, alpha=-decay * lr).add_(p.grad, alpha=-lr)
                p.add_(v)
        return loss


def param_groups(model, weight_decay, decay_biases=False):
    """Weights decay; biases too only if asked (the original code decays weights only, spec §3)."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return [{"params": weights, "weight_decay": weight_decay},
            {"params": biases, "weight_decay": weight_decay if decay_biases else 0.0}]


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


class LRSchedule:
    """§5: divide the rate by 10 when the validation error stops improving, at most
    3 times. "Stops improving" = no new best for `patience` epochs in a row.
    With `steps` (epochs), divide at those epochs instead.
    """

    def __init__(self, lr, patience=5, factor=0.1, max_drops=3, steps=()):
        self.lr, self.patience, self.factor, self.max_drops = lr, patience, factor, max_drops
        self.steps = tuple(sorted(steps))
        self.best, self.bad_epochs, self.drops = float("inf"), 0, 0

    def step(self, epoch, val_error):
        """Call after epoch `epoch` (0-based) with its validation error; returns the new rate."""
        if self.steps:
            if epoch + 1 in self.steps:
                self._drop()
            return self.lr
        if val_error < self.best:
            self.best, self.bad_epochs = val_error, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience and self.drops < self.max_drops:
                self._drop()
                self.bad_epochs = 0
        return self.lr

    def _drop(self):
        self.lr *= self.factor
        self.drops += 1

    def state_dict(self):
        return {k: getattr(self, k) for k in ("lr", "patience", "factor", "max_drops", "steps",
                                               "best", "bad_epochs", "drops")}

    def load_state_dict(self, state):
        for k, v in state.items():
            setattr(self, k, tuple(v) if k == "steps" else v)


def velocity_state(net, optimizer, writer_only=False):
    """The optimizer's state in the canonical format (zeros before the first step), so that
    a run resumes in any placement; `writer_only` as `map_canonical` takes it."""
    return net.map_canonical(lambda p: optimizer.state[p].get("velocity", torch.zeros_like(p)),
                             writer_only=writer_only)


def load_velocity(net, optimizer, velocity):
    """Give each local parameter its slice of the canonical velocity."""
    net.scatter_canonical(velocity, lambda p: optimizer.state[p].setdefault("velocity", torch.zeros_like(p)))

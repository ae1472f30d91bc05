"""The cost of the training health figures (`alexnet_mp.train.health`) at --print-freq 10.

Two ways through the same `print_freq` steps, timed side by side: plain steps,
and the same steps with the health hooks armed on the last one and read after
it, as a training run does at a log step. The loss's host read, which every log
step makes anyway, is in both.
"""
import torch

from alexnet_mp.bench.timing import make_batch, timed
from alexnet_mp.model.net import AlexNet
from alexnet_mp.train.health import Health
from alexnet_mp.train.optim import PaperSGD, param_groups
from alexnet_mp.train.step import train_step


def bench_health(cfg, device, print_freq=10):
    """(health's share of the time of `print_freq` training steps, figures of the last read)."""
    model = AlexNet(1000, seed=0, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = PaperSGD(param_groups(model, 5e-4), lr=1e-4)
    x, y = make_batch(cfg.batch_size, device, device.type == "cuda")
    health = Health(model)
    last = {}

    def steps(measure):
        def run():
            model.train()
            for i in range(print_freq):
                if measure and i == print_freq - 1:
                    health.arm()
                loss, _ = train_step(model, optimizer, x, y, cfg.amp)
            loss.item()
            if measure:
                last.update(health.read(optimizer))
        return run
    plain, measured = timed([steps(False), steps(True)], cfg.repeats)
    health.close()
    return measured[0] / plain[0] - 1.0, last

"""Training health at log steps: what each layer conv1..fc7 does, and why a run may sit at chance.

For each layer, on the logged step's batch:

* `dead`: the fraction of its ReLU units that were zero for every example. A conv
  layer's unit is one feature map (zero at every position of every example), a
  fully connected layer's one neuron. A dead unit passes no gradient, so a layer
  that is dead throughout stops the run learning.
* `rms`: the RMS of its output after the ReLU (what the next layer reads).
* `update_ratio`: RMS of the step the optimizer just took (the velocity: w <- w + v,
  §5) over RMS of the weight. Around 1e-3 is a healthy pace; near 1 every step
  rewrites the layer.

The figures are gathered only on a step that logs: forward hooks armed for that
step reduce on the device, and the log step's one host read (which a log step
makes anyway) brings them back. A step that does not log runs no extra op and
reads nothing, and no collective is added: under torchrun rank 0 reports the
column(s) it holds.
"""
import torch

from alexnet_mp.model.arch import COLUMN_LAYERS

FIGURES = ("dead", "rms", "update_ratio")


def layer_modules(net):
    """{layer name: [its module in each column this process holds]} for conv1..fc7."""
    columns = getattr(net, "columns", None)
    holders = list(columns) if isinstance(columns, torch.nn.ModuleList) else [net]
    return {layer.name: [getattr(h, layer.name) for h in holders] for layer in COLUMN_LAYERS}


class Health:
    """Forward hooks on conv1..fc7 that measure one armed forward; `read` returns the figures."""

    def __init__(self, net):
        self.modules = layer_modules(net)
        self.armed, self._sums = False, {}
        self._handles = [m.register_forward_hook(self._hook(name))
                         for name, ms in self.modules.items() for m in ms]

    def _hook(self, name):
        def measure(module, inputs, out):
            if not self.armed:
                return
            with torch.no_grad():
                o = out.detach().float()
                over = (0,) + tuple(range(2, o.dim()))      # examples, and positions of a map
                alive = (o > 0).any(dim=over)
                relu = o.clamp_min(0)
                sums = torch.stack([(~alive).sum().float(), torch.tensor(float(alive.numel()), device=o.device),
                                    relu.pow(2).sum(), torch.tensor(float(relu.numel()), device=o.device)])
                self._sums.setdefault(name, []).append(sums)
        return measure

    def arm(self):
        """Measure the next forward (the step that will log)."""
        self.armed, self._sums = True, {}

    def read(self, optimizer):
        """{layer: {dead, rms, update_ratio}} of the armed forward and the step after it (one host read)."""
        self.armed = False
        if not self._sums:
            return {}
        names = [n for n in self.modules if n in self._sums]
        rows = []
        for name in names:
            s = torch.stack([t.to(self._sums[names[0]][0].device) for t in self._sums[name]]).sum(0)
            w2 = v2 = 0.0
            for m in self.modules[name]:
                w = m.weight.detach().float()
                v = optimizer.state.get(m.weight, {}).get("velocity")
                w2 = w2 + w.pow(2).sum().to(s.device)
                v2 = v2 + (v.float().pow(2).sum().to(s.device) if v is not None else torch.zeros((), device=s.device))
            rows.append(torch.stack([s[0] / s[1], (s[2] / s[3]).sqrt(), (v2 / w2).sqrt()]))
        values = torch.stack(rows).cpu().tolist()
        return {name: dict(zip(FIGURES, row)) for name, row in zip(names, values)}

    def close(self):
        for h in self._handles:
            h.remove()

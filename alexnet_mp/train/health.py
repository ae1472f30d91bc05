"""Training health at log steps: what each layer conv1..fc7 does, and why a run may sit at chance.
(conv1..conv5 for the global-average-pool head, which has no fc6 and fc7.)

For each layer, on the logged step's batch:

* `dead`: the fraction of its ReLU units that were zero for every example. A conv
  layer's unit is one feature map (zero at every position of every example), a
  fully connected layer's one neuron. A dead unit passes no gradient, so a layer
  that is dead throughout stops the run learning.
* `rms`: the RMS of its output after the ReLU (what the next layer reads; with BatchNorm,
  after BatchNorm and the ReLU).
* `update_ratio`: RMS of the step the optimizer just took (the velocity: w <- w + v,
  §5) over RMS of the weight. Around 1e-3 is a healthy pace; near 1 every step
  rewrites the layer.

The figures are gathered only on a step that logs: forward hooks armed for that
step keep the layers' outputs (which the in-place ReLU makes the layers' ReLU
outputs), they are reduced on the device after the step, and the log step's one
host read (which a log step makes anyway) brings them back. A step that does not log runs no extra op and
reads nothing, and no collective is added: under torchrun rank 0 reports the
column(s) it holds.
"""
import torch

from alexnet_mp.model.arch import hidden_layers, norm_name

FIGURES = ("dead", "rms", "update_ratio")


def layer_modules(net, outputs=False):
    """{layer name: [its module in each column this process holds]} for conv1..fc7 (conv1..conv5
    for the "gap" head); `outputs`: the module whose output the ReLU overwrites, the layer's
    BatchNorm where it has one."""
    columns = getattr(net, "columns", None)
    holders = list(columns) if isinstance(columns, torch.nn.ModuleList) else [net]

    def module(h, layer):
        return getattr(h, norm_name(layer), None) if outputs and hasattr(h, norm_name(layer)) else \
            getattr(h, layer.name)
    return {layer.name: [module(h, layer) for h in holders] for layer in hidden_layers(net.config)}


class Health:
    """Forward hooks on conv1..fc7 that measure one armed forward; `read` returns the figures."""

    def __init__(self, net):
        self.modules = layer_modules(net)
        self.armed, self._outputs = False, {}
        self._handles = [m.register_forward_hook(self._hook(name))
                         for name, ms in layer_modules(net, outputs=True).items() for m in ms]

    def _hook(self, name):
        def keep(module, inputs, out):
            # The run's in-place ReLU turns this very tensor into the layer's output (run_layer),
            # so it is read after the step: no copy, and nothing computed during the step.
            if self.armed:
                self._outputs.setdefault(name, []).append(out)
        return keep

    def arm(self):
        """Measure the next forward (the step that will log)."""
        self.armed, self._outputs = True, {}

    def read(self, optimizer):
        """{layer: {dead, rms, update_ratio}} of the armed forward and the step after it (one host read)."""
        self.armed, outputs, self._outputs = False, self._outputs, {}
        if not outputs:
            return {}
        names = [n for n in self.modules if n in outputs]
        device = outputs[names[0]][0].device
        rows = []
        with torch.no_grad():
            for name in names:
                dead = units = square = count = 0
                for out in outputs[name]:
                    over = (0,) + tuple(range(2, out.dim()))          # examples, and positions of a map
                    dead = dead + (out.amax(dim=over) <= 0).sum().to(device)
                    units += out.shape[1]
                    square = square + torch.linalg.vector_norm(out, dtype=torch.float32).square().to(device)
                    count += out.numel()
                weight = velocity = 0
                for m in self.modules[name]:
                    v = optimizer.state.get(m.weight, {}).get("velocity")
                    weight = weight + torch.linalg.vector_norm(m.weight, dtype=torch.float32).square().to(device)
                    if v is not None:
                        velocity = velocity + torch.linalg.vector_norm(v, dtype=torch.float32).square().to(device)
                rows.append(torch.stack([dead / units, (square / count).sqrt(),
                                         (torch.as_tensor(velocity, device=device) / weight).sqrt()]))
        values = torch.stack(rows).cpu().tolist()
        return {name: dict(zip(FIGURES, row)) for name, row in zip(names, values)}

    def close(self):
        for h in self._handles:
            h.remove()

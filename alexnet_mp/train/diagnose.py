"""Why a run sits at chance: a loss near ln(C) is the reason to look, the health figures decide.

A loss near ln(C) alone says nothing: the paper's own recipe sits there for tens
of steps before it falls (README, "If the loss stays at ln(C)"). So the rule has
two parts. The loss must have stayed within `NEAR` of ln(C) for `PATIENCE` log
steps in a row, after a warm-up of `WARMUP_STEPS` steps; then the health figures
(`alexnet_mp.train.health`) must show one of the causes below, each measured on
the demo set at batch 16 (README):

* dead: a layer whose ReLU units are (nearly) all zero for every example passes no
  gradient to the layers below it. `--dropout 0` at the paper's lr 0.01 kills fc7
  within 20 steps (fc7 100% dead, its RMS falling to 0.007).
* no-signal: conv1's output is tiny next to the biases of 1 that conv2, conv4,
  conv5, fc6 and fc7 add (§5), so every layer above it computes nearly the same
  for every image. `--input-scale unit` gives conv1 an RMS of 0.17 (the raw
  pixels the N(0, 0.01) init was made for give 6 to 9), and conv2's RMS is its
  bias, 1.00.

Where the network departs from Figure 2, a cause may not apply. The global-average-pool
head has no fc6 and fc7, so its figures, and a dead layer, end at conv5 (`--dropout 0`
killing fc7 cannot happen). BatchNorm rescales every conv's output to unit variance and
removes the offset of the conv biases, so conv1's RMS says nothing of the image's scale
there: no-signal is not read for it.
"""
import math

WARMUP_STEPS = 30        # the baseline's first steps swing around ln(C) on raw pixels
NEAR = 0.15              # |mean loss since the last log step - ln C| <= NEAR * ln C is "at chance"
PATIENCE = 3             # log steps in a row at chance before the figures are read
DEAD = 0.95              # a layer with this fraction of dead units passes (almost) no gradient
NO_SIGNAL_RMS = 1.0      # conv1's RMS below this: the biases of 1 above it drown the image


def cause_of(health, batch_norm=False):
    """(cause, one line naming it and its fix) from one log step's health figures, or None.
    `batch_norm`: the network normalises its conv outputs (no-signal does not apply)."""
    if not health:
        return None
    dead = [(name, f["dead"]) for name, f in health.items() if f["dead"] >= DEAD]
    if dead:
        name, fraction = dead[-1]          # the highest dead layer cuts off every layer below it
        return (f"dead-{name}", f"{name}'s ReLU units are dead ({100 * fraction:.0f}% zero for every example, "
                                f"RMS {health[name]['rms']:.3g}), so no gradient reaches the layers below it: "
                                f"lower --lr (e.g. 0.001), or keep dropout on (the paper's --dropout 0.5, §4.2)")
    conv1 = health.get("conv1")
    if conv1 is not None and conv1["rms"] < NO_SIGNAL_RMS and not batch_norm:
        return ("no-signal", f"conv1's output RMS is {conv1['rms']:.3g}, too small beside the biases of 1 in "
                             f"conv2..fc7 (§5), so every image looks alike to the layers above: inputs at unit "
                             f"scale with N(0, 0.01) weights; use raw pixels minus the mean (--input-scale raw, "
                             f"spec §2)")
    return None


class StuckWatch:
    """Fed every log step's (step, loss, health); says why the run is stuck, once per cause."""

    def __init__(self, num_classes, model=None):
        self.chance = math.log(num_classes)
        self.batch_norm = bool(model is not None and model.batch_norm)     # model: the run's ModelConfig
        self.at_chance, self.cause = 0, None

    def update(self, step, loss, health):
        """The line to print when a new cause shows, else None."""
        near = math.isfinite(loss) and abs(loss - self.chance) <= NEAR * self.chance
        self.at_chance = self.at_chance + 1 if near and step >= WARMUP_STEPS else 0
        if self.at_chance < PATIENCE:
            return None
        found = cause_of(health, self.batch_norm)
        if found is None or found[0] == self.cause:
            return None
        self.cause = found[0]
        return (f"warning: the loss has stayed at chance (ln {len_classes(self.chance)} = {self.chance:.2f}) "
                f"for {self.at_chance} log steps by step {step}, and {found[1]}")


def len_classes(chance):
    return round(math.exp(chance))

"""The paper's claims as experiments: which piece each variant takes away, and the budget all share.

Section 3 of the paper justifies each unusual piece of the network by the error
it removes (§3.2 two columns, §3.3 LRN, §3.4 overlapping pooling, §4.1 PCA
colour augmentation, §4.2 dropout). Each `Variant` takes one piece away as
overrides of the config's fields; every run of a study shares one `Budget`.

Two variants are not the paper's ablations but what re-implementers compare it with
next (`later`): BatchNorm in place of LRN, and a global-average-pool head in place of
fc6..fc8. The paper claims nothing for them; they run only when named.
"""
from dataclasses import asdict, dataclass, fields, replace

from alexnet_mp.config import ModelConfig, TrainConfig
from alexnet_mp.errors import StudyError

PAPER = TrainConfig()
MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict         # config fields it changes: ModelConfig's or TrainConfig's, by name
    change: str             # what it changes, in words
    source: str             # where the claim is made
    paper: tuple            # the paper's (top-1, top-5) error reduction as printed, or None
    claim: str              # the paper's words where it gives no number
    expect: tuple           # (top-1, top-5): does the claim say the error is higher without the piece?
    default: bool           # in the default study (the paper's own ablations)
    later: bool = False     # later work, not a claim of the paper: run only when named (not in 'all')

    def config(self, base):
        """`base` (a TrainConfig) with this variant's overrides applied."""
        model = {k: v for k, v in self.overrides.items() if k in MODEL_FIELDS}
        recipe = {k: v for k, v in self.overrides.items() if k not in MODEL_FIELDS}
        return replace(base, model=replace(base.model, **model), **recipe)

    def describe(self):
        """The overrides in words, as the plan and the run records show them."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "(the paper)"


VARIANTS = (
    Variant("baseline", {}, "the paper's network and recipe", "", (None, None), "", (False, False), True),
    Variant("columns1", {"columns": 1}, "one column: conv1-4 with 48, 128, 192, 192 kernels; conv5, fc6, fc7 "
            "not halved", "§3.2 footnote", ("+1.7", "+1.2"), "", (True, True), True),
    Variant("no-lrn", {"lrn": False}, "no LRN after conv1 and conv2", "§3.3", ("+1.4", "+1.2"), "", (True, True),
            True),
    Variant("pool2", {"pool_size": 2}, "max-pool window 2, stride 2: no overlap, same map sizes", "§3.4",
            ("+0.4", "+0.3"), "", (True, True), True),
    Variant("no-pca", {"pca_std": 0.0}, "no PCA colour augmentation", "§4.1", ("> +1", None),
            "top-1 \"by over 1%\"", (True, False), True),
    Variant("no-dropout", {"dropout": 0.0}, "no dropout on fc6 and fc7", "§4.2", (None, None),
            "\"substantial overfitting\" without it", (True, False), True),
    Variant("input-unit", {"input_scale": "unit"}, "failure mode: inputs /255 and standardised per channel "
            "(torchvision's)", "spec §2", (None, None), "with N(0, 0.01) weights the net does not learn",
            (True, True), False),
    Variant("init-torch", {"init": "torch"}, "failure mode: PyTorch's default init instead of N(0, 0.01), "
            "biases 1/0", "§5", (None, None), "", (False, False), False),
    Variant("batchnorm", {"batch_norm": True, "lrn": False}, "later work: BatchNorm after every conv, per "
            "column, in place of LRN", "Ioffe & Szegedy 2015", (None, None), "none: not in the paper",
            (False, False), False, later=True),
    Variant("gap", {"head": "gap"}, "later work: conv5's maps averaged per column, then fc8 alone (no fc6, fc7, "
            "dropout)", "Lin et al. 2013", (None, None), "none: not in the paper", (False, False), False,
            later=True),
)
BY_NAME = {v.name: v for v in VARIANTS}
DEFAULT = tuple(v.name for v in VARIANTS if v.default)


def choose_variants(text):
    """Variant names from 'a,b' ('paper': the default five ablations, 'all': those and the failure
    modes; the later-work variants by name only); baseline first."""
    names = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        group = DEFAULT if name == "paper" else [v.name for v in VARIANTS if not v.later] if name == "all" \
            else [name]
        for n in group:
            if n not in BY_NAME:
                raise StudyError(f"unknown variant '{n}': choose from {', '.join(BY_NAME)} (or paper, all)")
            if n not in names:
                names.append(n)
    return [BY_NAME["baseline"]] + [BY_NAME[n] for n in names if n != "baseline"]


@dataclass(frozen=True)
class Budget:
    """What every run of a study shares: the recipe's length and rates (§5's by default)."""
    batch_size: int = PAPER.batch_size
    epochs: int = PAPER.epochs
    lr: float = PAPER.lr
    lr_steps: tuple = PAPER.lr_steps
    plateau_patience: int = PAPER.plateau_patience
    stop_at_step: int = 0             # stop every run after this global step (smoke tests)

    def train_config(self, variant, seed):
        recipe = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stop_at_step"}
        return variant.config(replace(PAPER, seed=seed, **recipe))

    def as_dict(self):
        """As study-plan.json and study.json record it (lists, not tuples, as JSON reads back)."""
        return {**asdict(self), "lr_steps": list(self.lr_steps)}


# The demo set's budget: (field, value, paper's value, why), printed at start and listed in the README.
DEMO_PRESET = (
    ("batch_size", 32, "128", "4x more updates fit in a CPU budget of minutes (as the demo)"),
    ("epochs", 3, "90", "12 runs of the demo set in 25 to 75 minutes on a 2-core CPU (--dry-run times it here)"),
    ("lr_steps", (2,), "plateau, patience 5", "3 epochs leave no room to wait for a plateau"),
)
DEMO_SEEDS = (2, "1 run per variant", "a spread to compare each difference with")


@dataclass(frozen=True)
class Plan:
    """One study: the store, the budget, the seeds and the variants, and where it writes."""
    store: str
    output_dir: str
    budget: Budget
    seeds: tuple
    variants: tuple
    replicas: int = 1                 # k replicas multiply the global batch (README): part of the budget
    workers: int = 0
    eval_batch_size: int = 16
    print_freq: int = 10
    devices: str = None

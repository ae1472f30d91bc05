"""Training with the paper's recipe (§5): the loop and everything a run keeps.

`loop`: the run, read top to bottom (train, build, train_one_epoch, end_epoch);
`step`: the one training step; `state`: `TrainState` and the checkpoint composed
from the parts' state_dicts; `weights`: a fresh run from a checkpoint's weights;
`optim`: the update rule and schedule; `preflight`: what is checked before the
first step; `metrics` and `report`: metrics.jsonl and the console; `health` and
`diagnose`: what each layer does at a log step, and why a run sits at chance.
"""

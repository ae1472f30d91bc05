"""Every error the tools report as one line (problem: fix), without a traceback.

They live together so that each layer raises its own kind without importing
the layer that happens to report it: the tools catch `UsageError` alone.
"""


class UsageError(Exception):
    """A problem the user can fix, worded as one line with its fix."""


class ConfigError(UsageError):
    """A config value this network cannot take."""


class StoreError(UsageError):
    """A problem with a prepared store."""


class CheckpointError(UsageError):
    """A checkpoint that cannot be used."""


class LaunchError(UsageError):
    """A launch that cannot run as asked (world size, devices, rendezvous)."""


class TrainingError(UsageError):
    """A problem that stops training."""


class StudyError(UsageError):
    """A study that cannot go on as asked."""

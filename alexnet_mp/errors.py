"""The base of every error the tools report as one line (problem: fix), without a traceback."""


class UsageError(Exception):
    pass

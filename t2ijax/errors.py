"""Errors a user acts on, each reported in one line by the CLIs (never a traceback)."""


class ConfigError(ValueError):
    """A value that cannot work; the message names it and says what to change."""


class StorageError(OSError):
    """A write the disk refused (full, read-only); the message says what was kept and what to do."""


class NonFiniteError(RuntimeError):
    """Training met a NaN/Inf under config.nonfinite.policy='halt'; names the step, the metric and
    the last good checkpoint."""


class DistributedError(RuntimeError):
    """Another process of a multi-process job died (or a barrier's time ran out); names the processes."""

"""The error type for input a user must fix (config, paths, mesh): reported in one line."""


class ConfigError(ValueError):
    """A value that cannot work; the message names it and says what to change."""

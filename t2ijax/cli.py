"""What the command lines that take --config share: config mistakes reported in one line."""
import sys

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config mistakes reported in one line instead of a traceback."""
    from t2ijax.config import check_overrides
    from t2ijax.errors import ConfigError

    try:
        check_overrides(argv)
        return flags.FLAGS(argv)
    except (ConfigError, flags.Error) as e:
        lines = str(e).strip().splitlines()
        # A config file that raised while loading: its exception is the last line of a traceback.
        sys.exit("error: " + (lines[-1] if "Traceback" in str(e) else " ".join(str(e).split())))


def loaded_config(config):
    """`config` (the --config flag's value), or exit with its loading error in one line."""
    from t2ijax.errors import ConfigError

    try:
        config.keys()  # a config file that failed to load raises on first use
    except (OSError, ConfigError) as e:
        sys.exit("error: " + " ".join(str(e).split()))
    return config

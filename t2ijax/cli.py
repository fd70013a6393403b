"""What the command lines share: mistakes reported in one line saying what to do, and a console kept to
t2ijax's own lines."""
import difflib
import logging as std_logging
import os
import re
import sys
from pathlib import Path

from absl import flags, logging

_PACKAGE = os.path.dirname(os.path.abspath(__file__))  # the installed package: local by construction
_CONFIGS = os.path.join(os.path.dirname(_PACKAGE), "configs")
# Libraries whose warnings are routine here: orbax warns on every read-only restore, TFDS on every dataset config.
_ERRORS_ONLY = (f"{os.sep}tensorflow_datasets{os.sep}",)
# Orbax's errors reach t2ijax as exceptions, reported in one line (t2ijax/training/checkpoint.py); its own log of a
# failed save is a traceback from each writer thread.
_SILENT = (f"{os.sep}orbax{os.sep}",)
_FLAG_ERROR = re.compile(r"flag --([\w.]+)=(.*?): (.*)")  # absl's wording of a bad or missing flag value


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config mistakes reported in one line instead of a traceback. A
    --config file under a configs/ directory may import its siblings from any working directory."""
    from t2ijax.config import check_overrides, configs_importable
    from t2ijax.errors import ConfigError

    for path in _config_paths(argv):
        configs_importable(path)
    try:
        check_overrides(argv)
        return flags.FLAGS(argv)
    except (ConfigError, flags.Error) as e:
        sys.exit("error: " + _one_line(str(e)))


def _config_paths(argv: list[str]) -> list[str]:
    """The values of --config=PATH and --config PATH in `argv`."""
    paths = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    return paths + [value for flag, value in zip(argv, argv[1:]) if flag == "--config"]


def _one_line(message: str) -> str:
    from t2ijax.config import override_type_message

    lines = message.strip().splitlines()
    # A config file that raised while loading: its exception is the last line of a traceback.
    if "Traceback" in message:
        return lines[-1]
    message = " ".join(message.split())
    match = _FLAG_ERROR.fullmatch(message)
    if match is None:
        return message
    name, value, reason = match.groups()
    if name.startswith("config."):
        return override_type_message(name[len("config."):], value) or message
    if value == "None" and "must have a value other than None" in reason:
        return f"--{name} is missing: {flags.FLAGS[name].help.splitlines()[0].rstrip(';')}"
    return f"--{name}={value}: {reason}"


def _shown(path: str) -> str:
    """`path` relative to the working directory when it lies below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def shipped_configs() -> list[str]:
    """The config files under configs/ (those of its folders after its own), as paths to pass to --config."""
    files = [p for p in Path(_CONFIGS).rglob("*.py") if p.name != "__init__.py"]
    return [_shown(str(p)) for p in sorted(files, key=lambda p: (len(p.parts), p))]


def _config_file_message(filename: str | None) -> str:
    """Why --config names no loadable file: missing, or not there (with the nearest shipped config)."""
    configs = shipped_configs()
    top = [c for c in configs if os.path.dirname(c) == _shown(_CONFIGS)]
    axes = ", ".join(os.path.basename(c) for c in configs if c not in top)
    listing = (f"the configs: {', '.join(top)}; one per ablation axis in {_shown(_CONFIGS)}/ablations/: {axes}"
               if configs else "configs/ of the t2ijax repository holds the shipped ones")
    if not filename:
        example = _shown(os.path.join(_CONFIGS, "shapes_tiny.py"))
        return f"--config is missing: give a config file, e.g. --config={example}; {listing}"
    nearest = difflib.get_close_matches(os.path.basename(filename), [os.path.basename(c) for c in configs], n=1)
    hint = f"did you mean {next(c for c in configs if os.path.basename(c) == nearest[0])}? " if nearest else ""
    return f"config file {filename} does not exist; {hint}{listing}"


def loaded_config(config):
    """`config` (the --config flag's value), or exit with its loading error in one line."""
    from ml_collections import config_flags

    from t2ijax.errors import ConfigError

    filename = None if config is None else config_flags.get_config_filename(flags.FLAGS["config"])
    if filename and not os.path.exists(filename):
        filename = filename.rpartition(":")[0] or filename  # drop a ':variant' suffix
    if filename is None or not os.path.isfile(filename):
        sys.exit("error: " + _config_file_message(filename))
    try:
        config.keys()  # a config file that failed to load raises on first use
    except (OSError, ConfigError) as e:
        sys.exit("error: " + " ".join(str(e).split()))
    return config


def verbose() -> bool:
    """--verbosity=1 (absl's flag, DEBUG) asks for every library's log lines and progress bars."""
    return logging.get_verbosity() >= logging.DEBUG


def _worth_showing(record: std_logging.LogRecord) -> bool:
    """t2ijax's own lines; other libraries' warnings (TFDS's errors only, orbax's none)."""
    if record.pathname.startswith(_PACKAGE):
        return True
    if any(part in record.pathname for part in _SILENT):
        return False
    least = std_logging.ERROR if any(part in record.pathname for part in _ERRORS_ONLY) else std_logging.WARNING
    return record.levelno >= least


def _without_closed_loop_tracebacks(previous):
    """sys.unraisablehook, less what orbax's writer threads print when a save has failed: their callbacks,
    run from native threads, find the event loop closed. t2ijax reports the failed save in one line."""

    def hook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    return hook


def quiet_libraries() -> None:
    """Keeps the console to t2ijax's own progress lines, unless --verbosity=1: other libraries' INFO logs
    (orbax logs every save and restore, TFDS every dataset read), TensorFlow's C++ INFO lines and
    progress bars (tqdm's) are left out; so are TFDS's printed banners (shapes_tfds.download_and_prepare).
    Called before TensorFlow loads: it reads the environment then."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # TensorFlow only reads datasets and writes summaries here: its oneDNN kernels (whose notice would print
    # before TensorFlow's logging is set up, twice) do no arithmetic t2ijax's results depend on.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its "PyTorch was not found" notice: t2ijax needs none
    logging.get_absl_handler().addFilter(_worth_showing)
    sys.unraisablehook = _without_closed_loop_tracebacks(sys.unraisablehook)

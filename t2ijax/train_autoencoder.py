"""Train a small KL autoencoder on a dataset's images, for datasets no pretrained autoencoder fits.

  python -m t2ijax.train_autoencoder --config=configs/shapes_autoencoder.py --workdir=workdirs/shapes_autoencoder

What it optimises and writes: t2ijax/models/autoencoders/training.py.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from t2ijax import host_memory
from t2ijax.cli import loaded_config, parse_flags

flags.DEFINE_string("workdir", None, "Directory for the autoencoder and reconstruction.json.", required=True)
config_flags.DEFINE_config_file("config", None, "Config file (configs/shapes_autoencoder.py).", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
    host_memory.tune_for_cpu()
    from t2ijax.errors import ConfigError
    from t2ijax.models.autoencoders.training import train_autoencoder

    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    config = loaded_config(FLAGS.config)
    try:
        result = train_autoencoder(config, FLAGS.workdir)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(f"autoencoder: {result['autoencoder']}\nheld-out PSNR: {result['psnr']:.2f} dB")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

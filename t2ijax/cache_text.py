"""Encode every caption of a dataset once into the text cache, so that training only reads it.

  python -m t2ijax.cache_text --config=configs/shapes_tiny.py [--unpadded]

Covers the caption fields config.data.captions names, of the train and validation splits and of
every augmentation view of the training images (config.data.augmentation), the empty caption (caption
dropout), config.sample.prompts and config.sampler.negative_prompt. Captions already cached
under the same config.text_encoder settings are not encoded again. `--unpadded` (or
config.text_encoder.cache_unpadded) stores only each caption's real tokens in the parts it
writes; parts already written keep their layout (both read the same).
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from t2ijax.cli import loaded_config, parse_flags
from t2ijax.data.prepare import cache_captions

config_flags.DEFINE_config_file("config", None, "Config file (see configs/).", lock_config=True)
flags.DEFINE_bool("unpadded", None, "Store each caption's real tokens only (default: "
                  "config.text_encoder.cache_unpadded).")
FLAGS = flags.FLAGS


def summary(report: dict) -> str:
    megabytes = lambda n: f"{n / 2**20:.1f} MB"  # noqa: E731
    saved = report["padded_bytes"] - report["stored_bytes"]
    return (f"text cache {report['directory']}: {report['shape'][0]} captions, embeddings "
            f"{list(report['shape'])} float16, {megabytes(report['stored_bytes'])} stored "
            f"({megabytes(saved)} less than padded), {report['encoded']} encoded now in {report['seconds']:.1f} s")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    import jax

    from t2ijax import sharding
    from t2ijax.config import validate
    from t2ijax.errors import ConfigError
    from t2ijax.interop.finetune import resolve_init_from

    config = loaded_config(FLAGS.config)
    if FLAGS.unpadded is not None:
        config.text_encoder.cache_unpadded = FLAGS.unpadded
    try:
        resolve_init_from(config)
        validate(config, jax.device_count(), jax.process_count())
        mesh, rules = sharding.run_mesh(config), sharding.logical_rules(config.sharding_rules)
        print(summary(cache_captions(config, mesh, rules)))
    except ConfigError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

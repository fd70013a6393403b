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
import time

from absl import app, flags
from ml_collections import config_flags

from t2ijax.cli import loaded_config, parse_flags

config_flags.DEFINE_config_file("config", None, "Config file (see configs/).", lock_config=True)
flags.DEFINE_bool("unpadded", None, "Store each caption's real tokens only (default: "
                  "config.text_encoder.cache_unpadded).")
FLAGS = flags.FLAGS


def dataset_captions(config) -> list[str]:
    """Every text training, sampling and evaluation will look up for this config's dataset: the fields
    config.data.captions names, in every augmentation view (mirrored views swap left and right)."""
    from t2ijax.data import augmentation, captions
    from t2ijax.data.sources import SPLITS, load_split

    texts = ["", config.sampler.negative_prompt, *config.sample.prompts]
    views = augmentation.views_of(config.data)
    for split in SPLITS:
        fields = captions.field_captions(config.data, load_split(config.data, split))
        texts += augmentation.view_captions(fields, views if split == "train" else views[:1]).ravel().tolist()
    return texts


def cache_captions(config, mesh=None, rules=None) -> dict:
    """Fills the text cache for `config`; what it holds afterwards, and what this run added."""
    from t2ijax.data.prepare import text_cache_dir
    from t2ijax.data.text_cache import TextCache

    start = time.time()
    cache = TextCache(text_cache_dir(config.data), config.text_encoder, mesh, rules)
    encoded = cache.fill(dataset_captions(config))
    return dict(directory=cache.directory, shape=cache.shape(), encoded=encoded, stored_bytes=cache.stored_bytes,
                padded_bytes=cache.padded_bytes, seconds=time.time() - start)


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
        mesh, rules = sharding.make_mesh(config.mesh), sharding.logical_rules(config.sharding_rules)
        print(summary(cache_captions(config, mesh, rules)))
    except ConfigError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

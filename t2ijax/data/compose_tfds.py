"""The compose dataset as a TensorFlow Datasets builder, generated locally.

Examples come from `t2ijax.data.compose`; nothing is downloaded. Configs, building and reading are the
shapes builder's (`shapes_tfds`): same names, counts and shares of the examples, same numpy layout.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from t2ijax.data import compose, shapes_tfds


class Compose(shapes_tfds.GeneratedSplits, tfds.core.GeneratorBasedBuilder):
    """Synthetic compositional scenes, generated locally (nothing is downloaded)."""

    generate = staticmethod(compose.example)

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [shapes_tfds.make_config(32), shapes_tfds.make_config(64)]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        per_object = tfds.features.Tensor(shape=(compose.MAX_OBJECTS,), dtype=np.int32)
        scalar = tfds.features.Tensor(shape=(), dtype=np.int32)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(config.height, config.width, 3)),
                "caption_long": tfds.features.Text(),
                "caption_short": tfds.features.Text(),
                **dict.fromkeys(compose.SCENE_FIELDS, scalar),
                **dict.fromkeys(compose.OBJECT_FIELDS, per_object),
            }),
            description="Synthetic compositional scenes (see t2ijax/data/compose.py).",
        )


def build(data_dir: str, size: int | tuple[int, int] = 32, num_train: int | None = None,
          num_validation: int | None = None, stride: int = 1, residues: tuple[int, ...] = (0,)) -> Compose:
    """The builder for this image size and these examples (shapes_tfds.make_config), prepared unless it already
    is; a size under compose.MIN_SIDE is a ConfigError before anything is built."""
    compose.check_size(*shapes_tfds.image_size(size))
    config = shapes_tfds.make_config(size, num_train, num_validation, stride, residues)
    # TFDS takes registered configs by name only; other sizes are passed as objects.
    builder = Compose(config=config.name if config.name in Compose.builder_configs else config, data_dir=data_dir)
    shapes_tfds.download_and_prepare(builder)
    return builder

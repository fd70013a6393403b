"""The synthetic shapes dataset as a TensorFlow Datasets builder, generated locally.

Examples come from `t2ijax.data.shapes`; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from t2ijax.data.shapes import MAX_OBJECTS, example

DEFAULT_NUM_TRAIN = 10_000
DEFAULT_NUM_VALIDATION = 512


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    resolution: int = 32
    num_train: int = DEFAULT_NUM_TRAIN
    num_validation: int = DEFAULT_NUM_VALIDATION


def make_config(
    resolution: int, num_train: int | None = None, num_validation: int | None = None
) -> ShapesConfig:
    """Default sizes give the config "<res>"; other sizes get their own name (and directory)."""
    num_train = DEFAULT_NUM_TRAIN if num_train is None else num_train
    num_validation = DEFAULT_NUM_VALIDATION if num_validation is None else num_validation
    name = str(resolution)
    if (num_train, num_validation) != (DEFAULT_NUM_TRAIN, DEFAULT_NUM_VALIDATION):
        name += f"_train{num_train}_val{num_validation}"
    return ShapesConfig(
        name=name,
        resolution=resolution,
        num_train=num_train,
        num_validation=num_validation,
        description=f"{resolution}x{resolution}, {num_train} train / {num_validation} validation",
    )


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Synthetic captioned shapes, generated locally (nothing is downloaded)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [make_config(32), make_config(64)]

    def _info(self) -> tfds.core.DatasetInfo:
        res = self.builder_config.resolution
        pair = tfds.features.Tensor(shape=(MAX_OBJECTS,), dtype=np.int32)
        scalar = tfds.features.Tensor(shape=(), dtype=np.int32)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(res, res, 3)),
                    "caption_long": tfds.features.Text(),
                    "caption_short": tfds.features.Text(),
                    "num_objects": scalar,
                    "shape": pair,
                    "colour": pair,
                    "size": pair,
                    "position": pair,
                    "background": scalar,
                }
            ),
            description="Synthetic captioned shapes (see t2ijax/data/shapes.py).",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is generated
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train),
            "validation": self._generate_examples("validation", config.num_validation),
        }

    def _generate_examples(self, split: str, num: int):
        for index in range(num):
            yield index, example(split, index, self.builder_config.resolution)


def build(
    data_dir: str, resolution: int = 32, num_train: int | None = None, num_validation: int | None = None
) -> Shapes:
    """The builder for this resolution and size, prepared unless it already is."""
    config = make_config(resolution, num_train, num_validation)
    # TFDS takes registered configs by name only; other sizes are passed as objects.
    builder = Shapes(
        config=config.name if config.name in Shapes.builder_configs else config, data_dir=data_dir
    )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def load_split(
    data_dir: str,
    resolution: int,
    split: str,
    num_train: int | None = None,
    num_validation: int | None = None,
) -> dict[str, np.ndarray]:
    """All examples of a split as numpy (building the dataset first if needed).

    Captions come as object arrays of python str; the rest keep their dataset dtypes.
    """
    builder = build(data_dir, resolution, num_train, num_validation)
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    out = dict(data)
    for key in ("caption_long", "caption_short"):
        out[key] = np.array([s.decode() for s in data[key]], dtype=object)
    return out

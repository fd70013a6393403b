"""The synthetic shapes dataset as a TensorFlow Datasets builder, generated locally.

Examples come from `t2ijax.data.shapes`; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from t2ijax.data.shapes import MAX_OBJECTS, example

DEFAULT_NUM_TRAIN = 10_000
DEFAULT_NUM_VALIDATION = 512


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    height: int = 32
    width: int = 32
    num_train: int = DEFAULT_NUM_TRAIN
    num_validation: int = DEFAULT_NUM_VALIDATION
    stride: int = 1  # holds the examples i (of the first num_*) with i % stride in residues
    residues: tuple[int, ...] = (0,)


def image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a side (a square) or of a (height, width) pair."""
    height, width = (size, size) if np.ndim(size) == 0 else size
    return int(height), int(width)


def make_config(size: int | tuple[int, int], num_train: int | None = None, num_validation: int | None = None,
                stride: int = 1, residues: tuple[int, ...] = (0,)) -> ShapesConfig:
    """Default counts of all examples give the config "<res>" for a square, "<h>x<w>" otherwise; other
    counts, or a share of the examples (stride, residues), get their own name (and directory)."""
    height, width = image_size(size)
    num_train = DEFAULT_NUM_TRAIN if num_train is None else num_train
    num_validation = DEFAULT_NUM_VALIDATION if num_validation is None else num_validation
    residues = tuple(sorted({r % stride for r in residues}))
    if len(residues) == stride:  # every residue: every example
        stride, residues = 1, (0,)
    name = str(height) if height == width else f"{height}x{width}"
    description = f"{height}x{width}, {num_train} train / {num_validation} validation"
    if (num_train, num_validation) != (DEFAULT_NUM_TRAIN, DEFAULT_NUM_VALIDATION):
        name += f"_train{num_train}_val{num_validation}"
    if stride > 1:
        name += f"_mod{stride}_{'+'.join(map(str, residues))}"
        description += f", the examples i with i mod {stride} in {residues}"
    return ShapesConfig(name=name, height=height, width=width, num_train=num_train, num_validation=num_validation,
                        stride=stride, residues=residues, description=description)


class GeneratedSplits:
    """The splits of a TFDS builder whose examples come from its `generate(split, index, height, width)`: of the
    config's first num_train and num_validation indices, those with index % stride in residues."""

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is generated
        config = self.builder_config
        return {split: self._generate_examples(split, getattr(config, f"num_{split}"))
                for split in ("train", "validation")}

    def _generate_examples(self, split: str, num: int):
        config = self.builder_config
        for index in range(num):
            if index % config.stride in config.residues:
                yield index, self.generate(split, index, config.height, config.width)


class Shapes(GeneratedSplits, tfds.core.GeneratorBasedBuilder):
    """Synthetic captioned shapes, generated locally (nothing is downloaded)."""

    generate = staticmethod(example)

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [make_config(32), make_config(64)]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        pair = tfds.features.Tensor(shape=(MAX_OBJECTS,), dtype=np.int32)
        scalar = tfds.features.Tensor(shape=(), dtype=np.int32)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(config.height, config.width, 3)),
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


def download_and_prepare(builder: tfds.core.DatasetBuilder, **download_config) -> None:
    """Builds `builder`'s dataset unless it is built (`download_config`: further DownloadConfig fields, such as a
    Beam runner). TFDS prints banners on stdout as it builds; they go to the log at DEBUG level (absl's
    --verbosity=1 shows them)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False, **download_config))
    for line in printed.getvalue().splitlines():
        logging.debug("%s", line)


def build(data_dir: str, size: int | tuple[int, int] = 32, num_train: int | None = None,
          num_validation: int | None = None, stride: int = 1, residues: tuple[int, ...] = (0,)) -> Shapes:
    """The builder for this image size and these examples (see `make_config`), prepared unless it already is."""
    config = make_config(size, num_train, num_validation, stride, residues)
    # TFDS takes registered configs by name only; other sizes are passed as objects.
    builder = Shapes(
        config=config.name if config.name in Shapes.builder_configs else config, data_dir=data_dir
    )
    download_and_prepare(builder)
    return builder


def read(builder: Shapes, split: str) -> dict[str, np.ndarray]:
    """The examples of `split` (a split name, or a TFDS slice such as "train[100:200]") as numpy: captions as
    object arrays of python str, the rest in their dataset dtypes."""
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    out = dict(data)
    for key in ("caption_long", "caption_short"):
        out[key] = np.array([s.decode() for s in data[key]], dtype=object)
    return out


def load_split(data_dir: str, size: int | tuple[int, int], split: str, num_train: int | None = None,
               num_validation: int | None = None, stride: int = 1,
               residues: tuple[int, ...] = (0,)) -> dict[str, np.ndarray]:
    """All examples of a split as numpy (building the dataset first if needed); `size` is a side or
    (height, width), `stride` and `residues` pick a share of the examples (see `make_config`)."""
    return read(build(data_dir, size, num_train, num_validation, stride, residues), split)

"""Datasets by config.data.name, as sets of examples read by range: what preprocessing encodes.

An example set is a split's examples at one image size (a split at an evaluation size, or one
aspect-ratio bucket of it): `count` examples, `read(start, stop)` returning those as numpy arrays —
`image` uint8 [N, H, W, 3], one array of captions per caption field, and any ground-truth attributes
the dataset has. `split_sets` gives a split at one size, `bucket_sets` a split grouped by the bucket
grid (t2ijax/data/buckets.py) for the datasets in `BUCKETED`; nothing is read until asked for, so a
process reads only the examples it encodes. `load_split` / `load_buckets` read a whole set into memory.
"""
import dataclasses
import importlib
from typing import Protocol

import ml_collections
import numpy as np

from t2ijax.data import buckets, user_data
from t2ijax.data.buckets import Size
from t2ijax.errors import ConfigError
from t2ijax.registry import Registry

DATASETS = Registry("data.name")  # (config.data, split, (height, width)) -> ExampleSet
BUCKETED = Registry("data.name")  # (config.data, split, bucket grid) -> ({bucket: ExampleSet}, report)
SPLITS = ("train", "validation")
USER_FORMATS = ("image_folder", "webdataset", "parquet")  # t2ijax/data/user_data.py
# Datasets generated locally, at any size and aspect ratio: name -> the module of its TFDS builder
SYNTHETIC = {"compose": "compose_tfds", "shapes": "shapes_tfds"}


class ExampleSet(Protocol):
    count: int

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]: ...


def _split_size(cfg: ml_collections.ConfigDict, split: str) -> int:
    return cfg.num_train if split == "train" else cfg.num_validation


@dataclasses.dataclass
class ShapesSet:
    """A synthetic (shapes or compose) TFDS config's split (built when missing), read by slices."""
    builder: object
    split: str

    @property
    def count(self) -> int:
        return self.builder.info.splits[self.split].num_examples

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        from t2ijax.data import shapes_tfds

        return shapes_tfds.read(self.builder, f"{self.split}[{start}:{stop}]")


def _synthetic_buckets(build, cfg: ml_collections.ConfigDict, split: str,
                       grid: tuple[Size, ...]) -> tuple[dict[Size, ShapesSet], dict]:
    """Example i at config.data.aspect_ratios[i mod k], rendered at that ratio's nearest bucket; each
    bucket's examples are a TFDS config of their own (`build`'s) holding the same scenes as the square dataset."""
    ratios = tuple(cfg.aspect_ratios)
    residues: dict[Size, list[int]] = {}
    for residue, ratio in enumerate(ratios):
        residues.setdefault(buckets.nearest_bucket(grid, 1.0, ratio), []).append(residue)
    sets = {size: ShapesSet(build(cfg.data_dir, size, cfg.num_train, cfg.num_validation,
                                  stride=len(ratios), residues=tuple(residues[size])), split)
            for size in grid  # in the grid's order; a bucket's first example is its least residue
            if size in residues and min(residues[size]) < _split_size(cfg, split)}
    return sets, buckets.report(grid, {size: s.count for size, s in sets.items()})


def _register_synthetic(name: str, builder_module: str) -> None:
    """`name`'s example sets come from the TFDS builder in t2ijax.data.`builder_module`, whose `build` makes (when
    missing) the config of an image size and returns its builder."""

    def build(*args, **kwargs):
        # imports TensorFlow Datasets: only when used
        return importlib.import_module(f"t2ijax.data.{builder_module}").build(*args, **kwargs)

    @DATASETS.register(name)
    def split_set(cfg: ml_collections.ConfigDict, split: str, size: Size) -> ShapesSet:
        return ShapesSet(build(cfg.data_dir, size, cfg.num_train, cfg.num_validation), split)

    @BUCKETED.register(name)
    def bucket_sets(cfg: ml_collections.ConfigDict, split: str,
                    grid: tuple[Size, ...]) -> tuple[dict[Size, ShapesSet], dict]:
        return _synthetic_buckets(build, cfg, split, grid)


for _name, _module in SYNTHETIC.items():
    _register_synthetic(_name, _module)


def user_source(cfg: ml_collections.ConfigDict) -> user_data.Source:
    """The reader of a user dataset (config.data.name one of USER_FORMATS)."""
    from t2ijax.data.folder import FolderSource
    from t2ijax.data.parquet import ParquetSource
    from t2ijax.data.webdataset import WebDatasetSource

    return {"image_folder": FolderSource, "webdataset": WebDatasetSource, "parquet": ParquetSource}[cfg.name](cfg)


@dataclasses.dataclass
class UserSet:
    """The kept examples of a user dataset's build at these listing positions."""
    build: object
    entries: list
    positions: np.ndarray
    fields: list[str]

    @property
    def count(self) -> int:
        return len(self.positions)

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        from t2ijax.data import user_tfds

        return user_data.arrays(user_tfds.read_positions(self.build, self.entries, self.positions[start:stop]),
                                self.fields)


def _user_split(cfg: ml_collections.ConfigDict, split: str, sizes: tuple[Size, ...],
                fill: tuple[Size, ...]) -> tuple[object, list, list[tuple[int, user_data.Summary]], list[str]]:
    """The build, its entries, `split`'s (position, summary) pairs, kept and skipped, and the dataset's caption
    fields: images stored at the nearest of `sizes`, skipped when their crop for the
    nearest of `fill` would be upscaled."""
    from t2ijax.data import user_tfds  # imports TensorFlow Datasets: only when used

    sizing = user_data.Sizing(tuple(sizes), tuple(fill), cfg.max_pixels)
    build, entries, examples = user_tfds.built(user_source(cfg), cfg.data_dir, sizing, cfg.build_chunk,
                                               cfg.num_validation, user_tfds.Engine.from_config(cfg))
    held_out = user_data.held_out((ex.key for ex in examples if ex.skipped != "duplicate_key"), cfg.num_validation)
    chosen = [(i, ex) for i, ex in enumerate(examples) if (ex.key in held_out) == (split == "validation")]
    _check_usable(cfg, split, [ex for _, ex in chosen])
    return build, entries, chosen, user_data.caption_fields(examples)


def _user_sets(build, entries, chosen, fields, sizes) -> dict[Size, UserSet]:
    kept = [(i, s.size) for i, s in chosen if not s.skipped]
    return {size: UserSet(build, entries, np.asarray([i for i, s in kept if s == size], np.int64), fields)
            for size in sizes if any(s == size for _, s in kept)}  # in the grid's order


def _user_data(cfg: ml_collections.ConfigDict, split: str, size: Size) -> UserSet:
    """Every image of `split` fitted to `size`; those whose short side is below config.data.resolution are
    skipped, so the held-out images are the same at every evaluation size."""
    build, entries, chosen, fields = _user_split(cfg, split, (size,), ((cfg.resolution, cfg.resolution),))
    return _user_sets(build, entries, chosen, fields, (size,))[size]


def _user_buckets(cfg: ml_collections.ConfigDict, split: str,
                  grid: tuple[Size, ...]) -> tuple[dict[Size, UserSet], dict]:
    """Every image of `split` at the bucket nearest its aspect; those that would be upscaled to it are skipped."""
    build, entries, chosen, fields = _user_split(cfg, split, grid, grid)
    # buckets.report's fields, and what the build converted
    return _user_sets(build, entries, chosen, fields, grid), user_data.report([ex for _, ex in chosen], grid)


def _check_usable(cfg: ml_collections.ConfigDict, split: str, examples: list[user_data.Summary]) -> None:
    if all(ex.skipped for ex in examples):
        reasons = user_data.report(examples, ())["skipped"]
        raise ConfigError(f"none of the {len(examples)} {split} entries of config.data.path='{cfg.path}' is usable "
                          f"(skipped: {reasons}); add images and captions or lower config.data.resolution")


for _name in USER_FORMATS:
    DATASETS.register(_name)(_user_data)
    BUCKETED.register(_name)(_user_buckets)


def source_fingerprint(cfg: ml_collections.ConfigDict) -> str | None:
    """What identifies the dataset's files beyond config.data's fields (None when those suffice)."""
    return user_source(cfg).fingerprint() if cfg.name in USER_FORMATS else None


def split_set(cfg: ml_collections.ConfigDict, split: str, size: Size | None = None) -> ExampleSet:
    """`split` (config.data is `cfg`) at `size` (height, width; None: the square of config.data.resolution),
    its dataset built first when missing."""
    size = (cfg.resolution, cfg.resolution) if size is None else tuple(size)
    return DATASETS.get(cfg.name)(cfg, split, size)


def bucket_sets(cfg: ml_collections.ConfigDict, split: str,
                grid: tuple[Size, ...]) -> tuple[dict[Size, ExampleSet], dict]:
    """`split` grouped by bucket of `grid` (buckets.grid(config)): {(height, width): set} holding the
    non-empty buckets in the grid's order, and a report (buckets.report: examples per bucket, skipped ones by
    reason). A grid of just the square (config.resolution.buckets off) gives `split_set`'s set as its one group."""
    square = (cfg.resolution, cfg.resolution)
    if tuple(grid) == (square,) and cfg.name not in USER_FORMATS:  # user data reports what it skipped
        sets = {square: split_set(cfg, split)}
        return sets, buckets.report(grid, {square: sets[square].count})
    return BUCKETED.get(cfg.name)(cfg, split, grid)


def read_all(examples: ExampleSet) -> dict[str, np.ndarray]:
    return examples.read(0, examples.count)


def load_split(cfg: ml_collections.ConfigDict, split: str, size: Size | None = None) -> dict[str, np.ndarray]:
    """`split_set`'s examples, all of them, in memory (small datasets: tests, the autoencoder's training)."""
    return read_all(split_set(cfg, split, size))


def load_buckets(cfg: ml_collections.ConfigDict, split: str,
                 grid: tuple[Size, ...]) -> tuple[dict[Size, dict[str, np.ndarray]], dict]:
    """`bucket_sets`' examples, all of them, in memory."""
    sets, report = bucket_sets(cfg, split, grid)
    return {size: read_all(s) for size, s in sets.items()}, report

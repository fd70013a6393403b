"""Datasets by config.data.name: each returns a split as in-memory numpy arrays.

A split holds `image` uint8 [N, H, W, 3], one array of captions per caption field, and any
ground-truth attributes the dataset has. `load_split` reads a split at one size; `load_buckets`
reads it grouped by aspect-ratio bucket (t2ijax/data/buckets.py), for the datasets in `BUCKETED`.
"""
import ml_collections
import numpy as np

from t2ijax.data import buckets, user_data
from t2ijax.data.buckets import Size
from t2ijax.errors import ConfigError
from t2ijax.registry import Registry

DATASETS = Registry("data.name")  # (config.data, split, (height, width)) -> split
BUCKETED = Registry("data.name")  # (config.data, split, bucket grid) -> ({bucket: split}, report)
SPLITS = ("train", "validation")
USER_FORMATS = ("image_folder", "webdataset", "parquet")  # t2ijax/data/user_data.py


def _split_size(cfg: ml_collections.ConfigDict, split: str) -> int:
    return cfg.num_train if split == "train" else cfg.num_validation


@DATASETS.register("shapes")
def _shapes(cfg: ml_collections.ConfigDict, split: str, size: Size) -> dict[str, np.ndarray]:
    from t2ijax.data import shapes_tfds  # imports TensorFlow Datasets: only when used

    return shapes_tfds.load_split(cfg.data_dir, size, split, num_train=cfg.num_train,
                                  num_validation=cfg.num_validation)


@BUCKETED.register("shapes")
def _shapes_buckets(cfg: ml_collections.ConfigDict, split: str,
                    grid: tuple[Size, ...]) -> tuple[dict[Size, dict[str, np.ndarray]], dict]:
    """Example i at config.data.aspect_ratios[i mod k], rendered at that ratio's nearest bucket; each
    bucket's examples are a TFDS config of their own holding the same scenes as the square dataset."""
    from t2ijax.data import shapes_tfds

    ratios = tuple(cfg.aspect_ratios)
    residues: dict[Size, list[int]] = {}
    for residue, ratio in enumerate(ratios):
        residues.setdefault(buckets.nearest_bucket(grid, 1.0, ratio), []).append(residue)
    groups = {size: shapes_tfds.load_split(cfg.data_dir, size, split, num_train=cfg.num_train,
                                           num_validation=cfg.num_validation, stride=len(ratios),
                                           residues=tuple(residues[size]))
              for size in grid  # in the grid's order; a bucket's first example is its least residue
              if size in residues and min(residues[size]) < _split_size(cfg, split)}
    return groups, buckets.report(grid, groups)


def user_source(cfg: ml_collections.ConfigDict) -> user_data.Source:
    """The reader of a user dataset (config.data.name one of USER_FORMATS)."""
    from t2ijax.data.folder import FolderSource
    from t2ijax.data.parquet import ParquetSource
    from t2ijax.data.webdataset import WebDatasetSource

    return {"image_folder": FolderSource, "webdataset": WebDatasetSource, "parquet": ParquetSource}[cfg.name](cfg)


def _user_split(cfg: ml_collections.ConfigDict, split: str, sizes: tuple[Size, ...],
                fill: tuple[Size, ...]) -> tuple[list[user_data.Example], list[str]]:
    """`split`'s examples (kept and skipped) and the dataset's caption fields: images stored at the nearest of
    `sizes`, skipped when their crop for the nearest of `fill` would be upscaled."""
    from t2ijax.data import user_tfds  # imports TensorFlow Datasets: only when used

    sizing = user_data.Sizing(tuple(sizes), tuple(fill), cfg.max_pixels)
    examples = user_tfds.load(user_source(cfg), cfg.data_dir, sizing, cfg.build_chunk, cfg.num_validation,
                              user_tfds.Engine.from_config(cfg))
    return user_data.split(examples, split, cfg.num_validation), user_data.caption_fields(examples)


def _user_data(cfg: ml_collections.ConfigDict, split: str, size: Size) -> dict[str, np.ndarray]:
    """Every image of `split` fitted to `size`; those whose short side is below config.data.resolution are
    skipped, so the held-out images are the same at every evaluation size."""
    examples, fields = _user_split(cfg, split, (size,), ((cfg.resolution, cfg.resolution),))
    _check_usable(cfg, split, examples)
    return user_data.arrays(examples, fields)


def _user_buckets(cfg: ml_collections.ConfigDict, split: str,
                  grid: tuple[Size, ...]) -> tuple[dict[Size, dict[str, np.ndarray]], dict]:
    """Every image of `split` at the bucket nearest its aspect; those that would be upscaled to it are skipped."""
    examples, fields = _user_split(cfg, split, grid, grid)
    _check_usable(cfg, split, examples)
    kept = [ex for ex in examples if not ex.skipped]
    groups = {size: user_data.arrays([ex for ex in kept if ex.image.shape[:2] == size], fields)
              for size in grid if any(ex.image.shape[:2] == size for ex in kept)}  # in the grid's order
    return groups, user_data.report(examples, grid)  # buckets.report's fields, and what the build converted


def _check_usable(cfg: ml_collections.ConfigDict, split: str, examples: list[user_data.Example]) -> None:
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


def load_split(cfg: ml_collections.ConfigDict, split: str, size: Size | None = None) -> dict[str, np.ndarray]:
    """Builds the dataset if it is missing, then reads `split` (config.data is `cfg`) at `size`
    (height, width); None: the square of config.data.resolution."""
    size = (cfg.resolution, cfg.resolution) if size is None else tuple(size)
    return DATASETS.get(cfg.name)(cfg, split, size)


def load_buckets(cfg: ml_collections.ConfigDict, split: str,
                 grid: tuple[Size, ...]) -> tuple[dict[Size, dict[str, np.ndarray]], dict]:
    """`split` grouped by bucket of `grid` (buckets.grid(config)): {(height, width): split} holding the
    non-empty buckets in the grid's order, and a report (buckets.report: examples per bucket, skipped ones by reason).

    A grid of just the square (config.resolution.buckets off) gives `load_split`'s split as its one group.
    """
    square = (cfg.resolution, cfg.resolution)
    if tuple(grid) == (square,) and cfg.name not in USER_FORMATS:  # user data reports what it skipped
        groups = {square: load_split(cfg, split)}
        return groups, buckets.report(grid, groups)
    return BUCKETED.get(cfg.name)(cfg, split, grid)

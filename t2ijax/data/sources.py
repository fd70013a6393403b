"""Datasets by config.data.name: each returns a split as in-memory numpy arrays.

A split holds `image` uint8 [N, H, W, 3], one array of captions per caption field, and any
ground-truth attributes the dataset has. `load_split` reads a split at one size; `load_buckets`
reads it grouped by aspect-ratio bucket (t2ijax/data/buckets.py), for the datasets in `BUCKETED`.
"""
import ml_collections
import numpy as np

from t2ijax.data import buckets, image_folder
from t2ijax.data.buckets import Size
from t2ijax.registry import Registry

DATASETS = Registry("data.name")  # (config.data, split, (height, width)) -> split
BUCKETED = Registry("data.name")  # (config.data, split, bucket grid) -> ({bucket: split}, report)
SPLITS = ("train", "validation")


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


@DATASETS.register("image_folder")
def _image_folder(cfg: ml_collections.ConfigDict, split: str, size: Size) -> dict[str, np.ndarray]:
    return image_folder.load_split(cfg.path, size, split, cfg.num_validation)


@BUCKETED.register("image_folder")
def _image_folder_buckets(cfg: ml_collections.ConfigDict, split: str,
                          grid: tuple[Size, ...]) -> tuple[dict[Size, dict[str, np.ndarray]], dict]:
    return image_folder.load_buckets(cfg.path, grid, split, cfg.num_validation)


def source_fingerprint(cfg: ml_collections.ConfigDict) -> str | None:
    """What identifies the dataset's files beyond config.data's fields (None when those suffice)."""
    return image_folder.fingerprint(cfg.path) if cfg.name == "image_folder" else None


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
    if tuple(grid) == (square,):
        groups = {square: load_split(cfg, split)}
        return groups, buckets.report(grid, groups)
    return BUCKETED.get(cfg.name)(cfg, split, grid)

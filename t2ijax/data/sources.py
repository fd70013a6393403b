"""Datasets by config.data.name: each returns a split as in-memory numpy arrays.

A split holds `image` uint8 [N, H, W, 3], one array of captions per caption field, and any
ground-truth attributes the dataset has.
"""
import ml_collections
import numpy as np

from t2ijax.data import image_folder
from t2ijax.registry import Registry

DATASETS = Registry("data.name")
SPLITS = ("train", "validation")
CAPTION_FIELDS = ("caption_long", "caption_short")


@DATASETS.register("shapes")
def _shapes(cfg: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
    from t2ijax.data import shapes_tfds  # imports TensorFlow Datasets: only when used

    return shapes_tfds.load_split(cfg.data_dir, cfg.resolution, split, num_train=cfg.num_train,
                             num_validation=cfg.num_validation)


@DATASETS.register("image_folder")
def _image_folder(cfg: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
    return image_folder.load_split(cfg.path, cfg.resolution, split, cfg.num_validation)


def source_fingerprint(cfg: ml_collections.ConfigDict) -> str | None:
    """What identifies the dataset's files beyond config.data's fields (None when those suffice)."""
    return image_folder.fingerprint(cfg.path) if cfg.name == "image_folder" else None


def load_split(cfg: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
    """Builds the dataset if it is missing, then reads `split` (config.data is `cfg`)."""
    return DATASETS.get(cfg.name)(cfg, split)

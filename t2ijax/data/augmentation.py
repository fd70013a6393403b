"""Augmentation views of the training images, made once at the cache step (config.data.augmentation).

A view is the image mirrored or not, and cropped or not: view 0 is always the original. The loader
draws one view per example and epoch. A mirrored view's captions have "left" and "right" swapped, so
that "a red circle on the left" still describes it. A crop takes a random side fraction in
[crop_min_scale, 1] of the image at a random position, keeps the image's aspect and is resized back to
its size; crop k of example i is the same in every build (seeded by (k, i)).
"""
import dataclasses
import re

import ml_collections
import numpy as np
from PIL import Image

from t2ijax.errors import ConfigError
from t2ijax.registry import Registry

_CROP_SEED = 12


@dataclasses.dataclass(frozen=True)
class View:
    flipped: bool = False
    crop: int | None = None  # which of the example's crop_views random crops; None = the whole image


AUGMENTATIONS = Registry("data.augmentation")  # config.data -> the views of every training image


@AUGMENTATIONS.register("none")
def _none(cfg: ml_collections.ConfigDict) -> tuple[View, ...]:
    return (View(),)


@AUGMENTATIONS.register("flip")
def _flip(cfg: ml_collections.ConfigDict) -> tuple[View, ...]:
    return View(), View(flipped=True)


@AUGMENTATIONS.register("crop")
def _crop(cfg: ml_collections.ConfigDict) -> tuple[View, ...]:
    return (View(), *(View(crop=k) for k in range(cfg.crop_views)))


@AUGMENTATIONS.register("flip_crop")
def _flip_crop(cfg: ml_collections.ConfigDict) -> tuple[View, ...]:
    """The original, its mirror, the crops, then the crops' mirrors."""
    crops = [View(crop=k) for k in range(cfg.crop_views)]
    return (View(), View(flipped=True), *crops, *(dataclasses.replace(v, flipped=True) for v in crops))


def views_of(cfg: ml_collections.ConfigDict) -> tuple[View, ...]:
    return AUGMENTATIONS.get(cfg.augmentation)(cfg)


def settings(cfg: ml_collections.ConfigDict) -> dict:
    """The config.data fields the views depend on ({} without augmentation): part of what records are made with."""
    if cfg.augmentation == "none":
        return {}
    crops = {"crop_views": cfg.crop_views, "crop_min_scale": cfg.crop_min_scale} if "crop" in cfg.augmentation else {}
    return {"augmentation": cfg.augmentation, **crops}


def check_augmentation(cfg: ml_collections.ConfigDict) -> None:
    """config.data's crop settings, when the augmentation crops."""
    if "crop" not in cfg.augmentation:
        return
    if not (isinstance(cfg.crop_views, int) and cfg.crop_views >= 1):
        raise ConfigError(f"config.data.crop_views={cfg.crop_views} must be an integer >= 1 with "
                          f"config.data.augmentation='{cfg.augmentation}'")
    if not 0.0 < cfg.crop_min_scale <= 1.0:
        raise ConfigError(f"config.data.crop_min_scale={cfg.crop_min_scale} must be in (0, 1]: the least side of a "
                          "crop as a fraction of the image's")


_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def _swapped_word(match: re.Match) -> str:
    word = match.group(0)
    other = "right" if word.lower() == "left" else "left"
    if word.isupper():
        return other.upper()
    return other.capitalize() if word[0].isupper() else other


def swap_left_right(caption: str) -> str:
    """The caption of the mirrored image: the whole words "left" and "right" swapped, case kept."""
    return _LEFT_RIGHT.sub(_swapped_word, caption)


def crop_boxes(count: int, size: tuple[int, int], cfg: ml_collections.ConfigDict) -> np.ndarray:
    """float [count, crop_views, 4] (left, top, right, bottom) pixel boxes in `size` (height, width) images,
    of exactly its aspect (the resize samples between pixels); row i is the same for any count > i."""
    height, width = size
    draws = np.random.default_rng(_CROP_SEED).random((count, cfg.crop_views, 3))
    scale = cfg.crop_min_scale + (1.0 - cfg.crop_min_scale) * draws[..., 0]
    top, left = draws[..., 1] * (1.0 - scale) * height, draws[..., 2] * (1.0 - scale) * width
    return np.stack([left, top, left + scale * width, top + scale * height], axis=-1)


def _cropped(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC,
                                                    box=tuple(box.tolist())))


def view_images(images: np.ndarray, views: tuple[View, ...], cfg: ml_collections.ConfigDict,
                first: int = 0) -> np.ndarray:
    """uint8 [N, H, W, 3] -> [N, V, H, W, 3]: every view of every image, the images being examples
    first .. first + N - 1 of their split (which crops they get)."""
    crops = any(v.crop is not None for v in views)
    boxes = crop_boxes(first + len(images), images.shape[1:3], cfg)[first:] if crops else None
    out = np.empty((len(images), len(views), *images.shape[1:]), images.dtype)
    for v, view in enumerate(views):
        for i, image in enumerate(images):
            image = image if view.crop is None else _cropped(image, boxes[i, view.crop])
            out[i, v] = image[:, ::-1] if view.flipped else image
    return out


def view_captions(captions: np.ndarray, views: tuple[View, ...]) -> np.ndarray:
    """object [N, F] captions -> [N, V, F]: a mirrored view's have left and right swapped."""
    swapped = np.vectorize(swap_left_right, otypes=[object])(captions) if any(v.flipped for v in views) else None
    return np.stack([swapped if v.flipped else captions for v in views], axis=1)

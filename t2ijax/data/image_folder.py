"""Your own images: a directory of image files, each captioned by the .txt file of the same name.

  photos/cat_01.jpg   photos/cat_01.txt   ("A grey cat asleep on a red sofa.")
  photos/sub/dog.png  photos/sub/dog.txt

Images are read with PIL in RGB, center-cropped to a square and resized to config.data.resolution;
with config.resolution.buckets, each is center-cropped to the aspect of the bucket nearest its own
and resized to that bucket (`load_buckets`), and images of fewer pixels than the smallest bucket,
or unreadable ones, are skipped and counted. Both caption fields hold the .txt text. The held-out
split is the `num_validation` files whose name hashes lowest, so it stays the same as the folder
grows. Everything is held in memory: fine for the few thousand images of a fine-tune, not for a
pretraining corpus.
"""
import hashlib
from pathlib import Path

import numpy as np
from absl import logging
from PIL import Image

from t2ijax.data.buckets import Size, nearest_bucket, report, size_name
from t2ijax.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise ConfigError(f"config.data.path='{root}' is not a directory; give a folder of images with "
                          "same-name .txt captions")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"config.data.path='{root}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    uncaptioned = [p for p in files if not p.with_suffix(".txt").is_file()]
    if uncaptioned:
        raise ConfigError(f"{len(uncaptioned)} of {len(files)} images in {root} have no caption, e.g. "
                          f"{uncaptioned[0]}; write its caption to {uncaptioned[0].with_suffix('.txt')}")
    return files


def _name_hash(path: Path, root: Path) -> str:
    return hashlib.sha256(str(path.relative_to(root)).encode()).hexdigest()


def split_files(path: str, num_validation: int) -> dict[str, list[Path]]:
    if not path:
        raise ConfigError("config.data.path is empty; set it to a folder of images with same-name .txt captions")
    root = Path(path).expanduser()
    files = _images(root)
    if num_validation >= len(files):
        raise ConfigError(f"config.data.num_validation={num_validation} leaves no training image of the "
                          f"{len(files)} in {root}; hold out fewer")
    held_out = set(sorted(files, key=lambda p: _name_hash(p, root))[:num_validation])
    return {"train": [p for p in files if p not in held_out], "validation": [p for p in files if p in held_out]}


def _open_rgb(path: Path) -> Image.Image:
    """The decoded image in RGB; OSError when it is not a readable image."""
    with Image.open(path) as image:
        return image.convert("RGB")


def fit(image: Image.Image, size: Size) -> tuple[np.ndarray, bool]:
    """The largest centred crop of the (height, width) `size`'s aspect, resized to it; and whether it was upscaled."""
    height, width = size
    if image.width * height > image.height * width:  # wider than the target: crop the sides
        crop_height, crop_width = image.height, round(image.height * width / height)
    else:
        crop_height, crop_width = round(image.width * height / width), image.width
    left, top = (image.width - crop_width) // 2, (image.height - crop_height) // 2
    cropped = image.crop((left, top, left + crop_width, top + crop_height))
    return (np.asarray(cropped.resize((width, height), Image.Resampling.BICUBIC)),
            crop_height < height or crop_width < width)


def fitted_image(path: Path, size: Size) -> tuple[np.ndarray, bool]:
    """The image at `path` center-cropped to the aspect of `size` (height, width) and resized to it; and
    whether it was upscaled. An unreadable file is a ConfigError."""
    try:
        image = _open_rgb(path)
    except OSError as error:
        raise ConfigError(f"{path} is not a readable image ({error}); remove or replace it") from None
    return fit(image, size)


def fingerprint(path: str) -> str:
    """Changes when a file is added, removed or rewritten: what the latent cache is keyed on."""
    root = Path(path).expanduser()
    listing = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
               for p in sorted(root.rglob("*")) if p.is_file()]
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]


def _captions(files: list[Path]) -> np.ndarray:
    return np.asarray([p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in files], object)


def _split(images: list[np.ndarray], files: list[Path]) -> dict[str, np.ndarray]:
    captions = _captions(files)
    return {"image": np.stack(images), "caption_long": captions, "caption_short": captions}


def load_split(path: str, size: Size, split: str, num_validation: int) -> dict[str, np.ndarray]:
    """Every image of `split` at `size` (height, width)."""
    files = split_files(path, num_validation)[split]
    images, upscaled = zip(*(fitted_image(p, size) for p in files))
    if any(upscaled):
        logging.warning("%d of %d %s images in %s are smaller than %s px and were upscaled", sum(upscaled),
                        len(files), split, path, size_name(size))
    return _split(list(images), files)


def load_buckets(path: str, grid: tuple[Size, ...], split: str,
                 num_validation: int) -> tuple[dict[Size, dict[str, np.ndarray]], dict]:
    """Every image of `split` at the bucket nearest its own aspect: ({bucket: split}, buckets.report).

    Images of fewer pixels than the smallest bucket, and unreadable files, are skipped and counted.
    """
    files = split_files(path, num_validation)[split]
    least = min(grid, key=lambda size: size[0] * size[1])
    members: dict[Size, tuple[list, list]] = {}
    too_small = unreadable = 0
    for file in files:
        try:
            image = _open_rgb(file)
        except OSError:
            unreadable += 1
            continue
        if image.width * image.height < least[0] * least[1]:
            too_small += 1
            continue
        bucket = nearest_bucket(grid, image.height, image.width)
        images, kept = members.setdefault(bucket, ([], []))
        images.append(fit(image, bucket)[0])
        kept.append(file)
    if too_small or unreadable:
        logging.warning("skipped %d of %d %s images in %s: %d smaller than the smallest bucket %s, %d unreadable",
                        too_small + unreadable, len(files), split, path, too_small, size_name(least), unreadable)
    if not members:
        raise ConfigError(f"none of the {len(files)} {split} images in {path} fits a bucket ({too_small} smaller "
                          f"than {size_name(least)} px, {unreadable} unreadable); add larger images or lower "
                          "config.data.resolution")
    groups = {bucket: _split(*members[bucket]) for bucket in grid if bucket in members}  # in the grid's order
    return groups, report(grid, groups, too_small=too_small, unreadable=unreadable)

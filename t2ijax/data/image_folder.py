"""Your own images: a directory of image files, each captioned by the .txt file of the same name.

  photos/cat_01.jpg   photos/cat_01.txt   ("A grey cat asleep on a red sofa.")
  photos/sub/dog.png  photos/sub/dog.txt

Images are read with PIL in RGB, center-cropped to a square and resized to config.data.resolution;
both caption fields hold the .txt text. The held-out split is the `num_validation` files whose
name hashes lowest, so it stays the same as the folder grows. Everything is held in memory: fine
for the few thousand images of a fine-tune, not for a pretraining corpus.
"""
import hashlib
from pathlib import Path

import numpy as np
from absl import logging
from PIL import Image

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


def square_image(path: Path, resolution: int) -> tuple[np.ndarray, bool]:
    """The image center-cropped to a square and resized to `resolution`; and whether it was upscaled."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except OSError as error:
        raise ConfigError(f"{path} is not a readable image ({error}); remove or replace it") from None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((resolution, resolution), Image.Resampling.BICUBIC)), side < resolution


def fingerprint(path: str) -> str:
    """Changes when a file is added, removed or rewritten: what the latent cache is keyed on."""
    root = Path(path).expanduser()
    listing = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
               for p in sorted(root.rglob("*")) if p.is_file()]
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]


def load_split(path: str, resolution: int, split: str, num_validation: int) -> dict[str, np.ndarray]:
    files = split_files(path, num_validation)[split]
    images, upscaled = zip(*(square_image(p, resolution) for p in files))
    if any(upscaled):
        logging.warning("%d of %d %s images in %s are smaller than %d px and were upscaled", sum(upscaled),
                        len(files), split, path, resolution)
    captions = np.asarray([p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in files], object)
    return {"image": np.stack(images), "caption_long": captions, "caption_short": captions}

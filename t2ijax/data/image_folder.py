"""Images as the user datasets store them (center-cropped to a size's aspect and resized to it), and a
fingerprint of a source's files. The image_folder format itself: t2ijax/data/folder.py."""
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from t2ijax.data.buckets import Size
from t2ijax.errors import ConfigError


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


def fingerprint(path: str, files: list[Path] | None = None) -> str:
    """Changes when a file is added, removed or rewritten: what the datasets and caches are keyed on.
    `files`: those under the directory `path` that count (default: every file in it)."""
    root = Path(path).expanduser()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if files is None else files
    listing = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]

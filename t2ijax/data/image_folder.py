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


def crop_size(height: int, width: int, size: Size) -> Size:
    """(height, width) of the largest centred crop of a height x width image that has the aspect of `size`."""
    if width * size[0] > height * size[1]:  # wider than the target: crop the sides
        return height, round(height * size[1] / size[0])
    return round(width * size[0] / size[1]), width


def upscaled(height: int, width: int, size: Size) -> bool:
    """Whether fitting a height x width image to `size` enlarges its crop (a side of the crop is the shorter)."""
    crop = crop_size(height, width, size)
    return crop[0] < size[0] or crop[1] < size[1]


def fit(image: Image.Image, size: Size) -> tuple[np.ndarray, bool]:
    """The largest centred crop of the (height, width) `size`'s aspect, resized to it; and whether it was upscaled."""
    (height, width), (crop_height, crop_width) = size, crop_size(image.height, image.width, size)
    left, top = (image.width - crop_width) // 2, (image.height - crop_height) // 2
    cropped = image.crop((left, top, left + crop_width, top + crop_height))
    return (np.asarray(cropped.resize((width, height), Image.Resampling.BICUBIC)),
            upscaled(image.height, image.width, size))


def fitted_image(path: Path, size: Size) -> tuple[np.ndarray, bool]:
    """The image at `path` center-cropped to the aspect of `size` (height, width) and resized to it; and
    whether it was upscaled. An unreadable file is a ConfigError."""
    try:
        image = _open_rgb(path)
    except OSError as error:
        raise ConfigError(f"{path} is not a readable image ({error}); remove or replace it") from None
    return fit(image, size)


def fingerprint(root: Path, files: list[Path], ignored: dict[str, str] | None = None,
                by_content: tuple[str, ...] = ()) -> str:
    """Changes when one of `files` (under `root`) is added, removed or rewritten, or when what the listing
    passed over (`ignored`: {name: reason}) changes: what the datasets and caches are keyed on. A file counts by
    its path, size and modification time; one whose suffix is in `by_content` by its bytes, so an edit that keeps
    the size and restores the time (as cp -p, rsync -t and tar extraction do) still counts."""
    def state(path: Path) -> tuple:
        if path.suffix in by_content:
            return (hashlib.sha256(path.read_bytes()).hexdigest(),)
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns

    listing = [(str(p.relative_to(root)), *state(p)) for p in files] + sorted((ignored or {}).items())
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]

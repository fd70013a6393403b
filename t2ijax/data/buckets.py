"""Aspect-ratio buckets: (height, width) pixel sizes of about one area, and which one an image takes.

A bucket's sides are multiples of `multiple` (the patch size times the autoencoder's
downsampling), so every bucket makes a whole token grid, and its area, hence its token count,
lies within a tolerance of the square's. Aspects are width / height throughout.
"""
import math

import ml_collections

from t2ijax.errors import ConfigError
from t2ijax.models.build import pixel_multiple

Size = tuple[int, int]  # (height, width) in pixels


def size_name(size: Size) -> str:
    """"HxW", as bucket reports and per-size metrics name a size."""
    return f"{size[0]}x{size[1]}"


def _nearest_width(height: int, area: int, multiple: int) -> int:
    """The multiple of `multiple` whose product with `height` is nearest `area` (ties: the narrower)."""
    low = max(multiple, area // height // multiple * multiple)
    return min((low, low + multiple), key=lambda width: abs(height * width - area))


def bucket_grid(resolution: int, multiple: int, min_aspect: float = 0.5, max_aspect: float = 2.0,
                tolerance: float = 0.1) -> tuple[Size, ...]:
    """Every bucket of about resolution**2 pixels, one per height, sorted by aspect.

    Each height (a multiple of `multiple`) takes the width nearest the square's area; the pair is
    a bucket when its aspect lies in [min_aspect, max_aspect] and its area within `tolerance` of
    the square's. The square itself is always one, so valid arguments never give an empty grid.
    """
    if multiple <= 0:
        raise ConfigError(f"bucket grid: the side multiple {multiple} (model.patch_size x the autoencoder's "
                          "downsampling) must be positive")
    if resolution <= 0 or resolution % multiple:
        raise ConfigError(f"bucket grid: resolution {resolution} is not a positive multiple of {multiple} "
                          f"(model.patch_size x the autoencoder's downsampling); use "
                          f"{max(1, round(resolution / multiple)) * multiple}")
    if not 0 < min_aspect <= 1 <= max_aspect:
        raise ConfigError(f"config.resolution.min_aspect={min_aspect} and max_aspect={max_aspect} must satisfy "
                          "0 < min_aspect <= 1 <= max_aspect (aspects are width / height), e.g. 0.5 and 2.0")
    if not 0 < tolerance < 1:
        raise ConfigError(f"config.resolution.token_tolerance={tolerance} must be in (0, 1): the share by which a "
                          "bucket's token count may differ from the square's, e.g. 0.1")
    area = resolution**2
    tallest = math.isqrt(int(area * (1 + tolerance) / min_aspect)) + multiple
    buckets = []
    for height in range(multiple, tallest + 1, multiple):
        width = _nearest_width(height, area, multiple)
        if min_aspect <= width / height <= max_aspect and abs(height * width - area) <= tolerance * area:
            buckets.append((height, width))
    return tuple(sorted(buckets, key=lambda size: (size[1] / size[0], size[0])))


def grid(config: ml_collections.ConfigDict) -> tuple[Size, ...]:
    """The run's buckets at config.data.resolution; just the square when config.resolution.buckets is off."""
    resolution = config.data.resolution
    if not config.resolution.buckets:
        return ((resolution, resolution),)
    r = config.resolution
    return bucket_grid(resolution, pixel_multiple(config), r.min_aspect, r.max_aspect, r.token_tolerance)


def nearest_bucket(buckets: tuple[Size, ...], height: float, width: float) -> Size:
    """The bucket whose log aspect is nearest the image's (ties: the first); aspects beyond the
    grid's range take its end buckets."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda size: abs(math.log(size[1] / size[0]) - aspect))


def report(buckets: tuple[Size, ...], counts: dict[Size, int], skipped: dict[str, int] | None = None) -> dict:
    """What went where: examples per bucket ("HxW", empty ones included; `counts`: {size: examples}) and how many
    were skipped, by reason."""
    return {"buckets": {size_name(size): counts.get(size, 0) for size in buckets}, "skipped": dict(skipped or {})}


def _is_positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def check_buckets(config: ml_collections.ConfigDict) -> None:
    """config.data.aspect_ratios and config.resolution's grid, before any compute."""
    from t2ijax.data.sources import BUCKETED, SYNTHETIC  # sources reads its datasets through this module

    ratios = tuple(config.data.aspect_ratios)
    if not ratios or not all(_is_positive_number(a) for a in ratios):
        raise ConfigError(f"config.data.aspect_ratios={ratios} must be positive numbers (width / height), "
                          "e.g. (1.0,) or (0.5, 1.0, 2.0)")
    if ratios != (1.0,):
        if not config.resolution.buckets:
            raise ConfigError(f"config.data.aspect_ratios={ratios} draws non-square images, which need "
                              "config.resolution.buckets=True; set it, or leave aspect_ratios=(1.0,)")
        if config.data.name not in SYNTHETIC:
            raise ConfigError(f"config.data.aspect_ratios={ratios} applies to the synthetic datasets only "
                              f"({', '.join(SYNTHETIC)}); config.data.name='{config.data.name}' buckets each image "
                              "by its own aspect: leave aspect_ratios=(1.0,)")
        r = config.resolution
        outside = [a for a in ratios if not r.min_aspect <= a <= r.max_aspect]
        if outside:
            raise ConfigError(f"config.data.aspect_ratios has {outside[0]}, outside config.resolution.min_aspect="
                              f"{r.min_aspect}..max_aspect={r.max_aspect}; keep the ratios inside, or widen the range")
    if config.resolution.buckets and config.data.name not in BUCKETED.names():
        raise ConfigError(f"config.data.name='{config.data.name}' has no bucketed loader (those that do: "
                          f"{', '.join(BUCKETED.names())}); set config.resolution.buckets=False")
    grid(config)

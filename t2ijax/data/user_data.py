"""Your own image–caption data (image_folder, webdataset, parquet): entries, conversion, skip rules, report.

A format's `Source` lists its entries (one per image) in a deterministic order and reads their raw
bytes; everything else is shared. Each entry becomes one stored example: its image decoded, turned
upright by its EXIF orientation, converted to RGB uint8 (`to_rgb`) and fitted to its bucket, or, when
it cannot be used, a skip reason:

  duplicate_key     a key already listed (the first in listing order is kept)
  caption_missing   no caption sidecar, field or column;  caption_empty: only empty captions
  caption_not_utf8  a sidecar that is not UTF-8 (skipped rather than decoded with U+FFFD in the text)
  caption_not_json  a .json sidecar that is not a JSON object
  unreadable        not an image PIL can identify
  truncated         identified as an image, but cut short or broken (its header or pixels fail to decode)
  too_small         fewer pixels than the smallest size it could be stored at

The examples are stored as TensorFlow Datasets in chunks (t2ijax/data/user_tfds.py); the validation
split is the num_validation keys whose names hash lowest, skipped entries counted in their split.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from t2ijax.data.buckets import Size, nearest_bucket, size_name
from t2ijax.data.image_folder import fit
from t2ijax.errors import ConfigError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")


@dataclasses.dataclass(frozen=True)
class Entry:
    key: str                     # what duplicates and the held-out split are judged on
    where: tuple                 # what the source needs to read it (paths, offsets, rows)
    duplicate: bool = False      # set by `listing` on every entry after the first of its key


@dataclasses.dataclass
class Raw:
    image: bytes                                                # encoded, as stored
    sidecars: dict[str, bytes] = dataclasses.field(default_factory=dict)  # ".txt" / ".json": raw bytes
    fields: dict[str, str] = dataclasses.field(default_factory=dict)      # captions already decoded


class Source(Protocol):
    name: str  # config.data.name

    def entries(self) -> list[Entry]: ...                   # every entry, duplicates included, in order;
                                                            # ConfigError when the path or its files are wrong
    def read(self, entries: list[Entry]) -> Iterator[Raw]: ...  # one per entry, in their order
    def fingerprint(self) -> str: ...                       # changes when the source's files do


@dataclasses.dataclass
class Example:
    key: str
    image: np.ndarray | None     # fitted uint8 [H, W, 3]; None when skipped
    captions: dict[str, str]
    converted: str = ""          # the source's PIL mode when it was not RGB
    skipped: str = ""            # the reason, when skipped


class Skip(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------ one entry


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB: transparency composited on white, 16-bit grey scaled to 8 bits, CMYK/palette/grey converted."""
    if image.mode in SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(image, np.int64) >> 8, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def decode(data: bytes) -> tuple[Image.Image, str]:
    """The RGB image, upright, and the mode it was converted from ("" when it was RGB); Skip when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)  # a photo's EXIF orientation, as viewers show it
            return to_rgb(upright), ("" if image.mode == "RGB" else image.mode)
    except UnidentifiedImageError:
        raise Skip("unreadable") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise Skip("truncated") from None


def captions(raw: Raw) -> dict[str, str]:
    """The entry's caption fields: a .txt sidecar is "caption", a .json sidecar's string values are theirs
    (the .txt wins a clash), then the source's own fields; Skip when none is non-empty."""
    fields = {}
    for suffix in (".json", ".txt"):
        if suffix not in raw.sidecars:
            continue
        try:
            text = raw.sidecars[suffix].decode("utf-8")
        except UnicodeDecodeError:
            raise Skip("caption_not_utf8") from None
        if suffix == ".txt":
            fields["caption"] = text
            continue
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            raise Skip("caption_not_json") from None
        if not isinstance(values, dict):
            raise Skip("caption_not_json")
        fields.update({k: v for k, v in values.items() if isinstance(v, str)})
    fields.update(raw.fields)
    fields = {k: v.strip() for k, v in fields.items()}
    if not fields:
        raise Skip("caption_missing")
    if not any(fields.values()):
        raise Skip("caption_empty")
    return fields


def example(key: str, raw: Raw, sizes: tuple[Size, ...], min_pixels: int) -> Example:
    """The stored example: image at the bucket of `sizes` nearest its aspect; Skip when it cannot be used."""
    fields = captions(raw)
    image, converted = decode(raw.image)
    if image.width * image.height < min_pixels:
        raise Skip("too_small")
    return Example(key, fit(image, nearest_bucket(sizes, image.height, image.width))[0], fields, converted)


def files(path: str, name: str, suffixes: tuple[str, ...], what: str) -> tuple[Path, list[Path]]:
    """The files ending in `suffixes` under `path` (a directory, searched recursively, or a glob), sorted,
    and the directory their keys are relative to."""
    if not path:
        raise ConfigError(f"config.data.path is empty; set it to {what} for config.data.name='{name}'")
    root = Path(path).expanduser()
    if root.is_dir():
        found = root.rglob("*")
    elif glob.has_magic(str(root)):
        found = map(Path, glob.glob(str(root), recursive=True))
        root = Path(*itertools.takewhile(lambda part: not glob.has_magic(part), root.parts))
    else:
        raise ConfigError(f"config.data.path='{path}' is not a directory (nor a glob); set it to {what}")
    found = sorted(p for p in found if p.suffix.lower() in suffixes and p.is_file())
    if not found:
        raise ConfigError(f"config.data.path='{path}' holds no images (no {', '.join(suffixes)} files); "
                          f"set it to {what}")
    return root, found


def listing(source: Source) -> list[Entry]:
    """The source's entries, each after the first of its key marked a duplicate; ConfigError when there are none."""
    seen, out = set(), []
    for entry in source.entries():
        out.append(dataclasses.replace(entry, duplicate=entry.key in seen))
        seen.add(entry.key)
    if not out:
        raise ConfigError(f"config.data.path of config.data.name='{source.name}' holds no images; point it at "
                          "your data (docs/your_data.md)")
    return out


def held_out(keys, num_validation: int) -> set[str]:
    """The `num_validation` keys whose names hash lowest: the held-out split stays put as data is added."""
    return set(sorted(set(keys), key=lambda k: hashlib.sha256(k.encode()).hexdigest())[:num_validation])


def check_split(entries: list[Entry], num_validation: int, name: str) -> None:
    """At least one entry is left for training."""
    unique = sum(not e.duplicate for e in entries)
    if num_validation >= unique:
        raise ConfigError(f"config.data.num_validation={num_validation} leaves no training image of the {unique} "
                          f"of config.data.name='{name}'; hold out fewer")


# ------------------------------------------------------------------------------------ splits and report


def split(examples: list[Example], name: str, num_validation: int) -> list[Example]:
    """The `name` split ("train" or "validation") of the examples, kept and skipped, in their order."""
    validation = held_out((ex.key for ex in examples if ex.skipped != "duplicate_key"), num_validation)
    return [ex for ex in examples if (ex.key in validation) == (name == "validation")]


def caption_fields(examples: list[Example]) -> list[str]:
    """Every caption field of the kept examples, in order of first appearance."""
    return list(dict.fromkeys(field for ex in examples if not ex.skipped for field in ex.captions))


def arrays(examples: list[Example], fields: list[str]) -> dict[str, np.ndarray]:
    """The kept examples as a split: image uint8 [N, H, W, 3] and one object array per caption field."""
    kept = [ex for ex in examples if not ex.skipped]
    out = {"image": np.stack([ex.image for ex in kept])}
    for field in fields:
        out[field] = np.asarray([ex.captions.get(field, "") for ex in kept], object)
    return out


def _words(captions: list[str]) -> dict:
    counts = np.asarray([len(c.split()) for c in captions if c])
    stats = {"empty": len(captions) - len(counts)}
    if len(counts):
        stats.update(min=int(counts.min()), median=float(np.median(counts)),
                     p90=float(np.percentile(counts, 90)), max=int(counts.max()))
    return stats


def report(examples: list[Example], sizes: tuple[Size, ...]) -> dict:
    """Entries read, kept, converted (by source mode), skipped (by reason), per bucket, and words per
    caption per field (min, median, p90, max over the non-empty ones, and how many are empty)."""
    kept = [ex for ex in examples if not ex.skipped]
    shapes = Counter(ex.image.shape[:2] for ex in kept)
    return {"entries": len(examples), "kept": len(kept),
            "converted": dict(sorted(Counter(ex.converted for ex in kept if ex.converted).items())),
            "skipped": dict(sorted(Counter(ex.skipped for ex in examples if ex.skipped).items())),
            "buckets": {size_name(size): shapes[size] for size in sizes},
            "captions": {field: _words([ex.captions.get(field, "") for ex in kept])
                         for field in caption_fields(kept)}}

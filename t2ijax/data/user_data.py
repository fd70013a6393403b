"""Your own image–caption data (image_folder, webdataset, parquet): entries, conversion, skip rules, report.

A format's `Source` lists its entries (one per image) in a deterministic order, with what it found that is
no entry, and reads the entries' raw bytes; everything else is shared. Each entry becomes one stored example:
its image decoded, turned upright by its EXIF orientation, converted to RGB uint8 (`to_rgb`) and fitted to
its bucket, or, when it cannot be used, a skip reason:

  duplicate_key     a key already listed (the first in listing order is kept)
  caption_missing   no caption sidecar, field or column;  caption_empty: only empty captions
  caption_not_utf8  a sidecar that is not UTF-8 (skipped rather than decoded with U+FFFD in the text), or
                    JSON that escapes a lone surrogate ("\\ud800"), which UTF-8 cannot hold
  caption_not_json  a .json sidecar that is not a JSON object
  unreadable        not an image PIL can identify, or a file that cannot be read
  truncated         identified as an image, but cut short or broken (its header or pixels fail to decode)
  too_large         more pixels than config.data.max_pixels by its header (never decoded), or a decompression
                    bomb by PIL's limit
  too_small         its centred crop for the nearest of the sizes it must fill would be upscaled

What the listing finds that is no entry is never read, and is counted in the report by reason ("ignored"):

  name_not_utf8      an image whose key (file or member name) is not UTF-8
  link_outside_root  a symbolic link to a file outside the dataset's root (never followed)
  broken_link        a link to nothing, or a loop
  not_a_file         a directory or special file named like an image, a link to a directory (never walked:
                     what it links to inside the root is walked anyway), a tar member that is not a regular file
  orphan_caption     a caption sidecar or member with no image of its key
  other_file         a file (or tar member) of another suffix
  column_not_text    a Parquet column of bytes, lists or structs other than the image column
  file_unreadable    a .tar shard or .parquet file that cannot be opened (not one, compressed, cut short before
                     its first member or footer), or a directory that cannot be listed
  file_truncated     a .tar shard cut short or broken after its first member (its end-of-archive marker missing)
  image_column_null  a .parquet file whose image column is all null
The last three are whole files skipped, each named in the report ("files_skipped").

The examples are stored as TensorFlow Datasets in chunks (t2ijax/data/user_tfds.py); the validation
split is the num_validation keys whose names hash lowest, skipped entries counted in their split.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import glob
import hashlib
import io
import itertools
import json
import os
import stat
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from t2ijax.data.buckets import Size, nearest_bucket, size_name
from t2ijax.data.image_folder import fit, upscaled
from t2ijax.errors import ConfigError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")
WHOLE_FILES = ("file_unreadable", "file_truncated", "image_column_null")  # ignored reasons that skip a whole file


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
    error: str = ""                                             # a skip reason met while reading


def read_or_unreadable(read: Callable[[], Raw]) -> Raw:
    """`read()`, or a Raw skipped as unreadable when its files were removed or made unreadable since the listing."""
    try:
        return read()
    except OSError:
        return Raw(b"", error="unreadable")


class Source(Protocol):
    name: str  # config.data.name

    def entries(self) -> tuple[list[Entry], dict[str, str]]: ...  # every entry, duplicates included, in order,
                                                            # and {name: reason} of what was found and is no entry;
                                                            # ConfigError when the path or its files are wrong
    def read(self, entries: list[Entry]) -> Iterator[Raw]: ...  # one per entry, in their order
    def fingerprint(self) -> str: ...                       # changes when the source's files do


@dataclasses.dataclass(frozen=True)
class Sizing:
    """How an entry's image becomes a stored one."""
    sizes: tuple[Size, ...]  # it is stored at the one nearest its aspect
    fill: tuple[Size, ...]   # too_small when its crop for the one of these nearest its aspect would be upscaled
    max_pixels: int          # too_large above this many pixels, by its header


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


def decode(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """The RGB image, upright, and the mode it was converted from ("" when it was RGB); Skip when it cannot be
    read or its header claims more than `max_pixels` pixels (then its pixels are never decoded)."""
    try:
        with warnings.catch_warnings():  # config.data.max_pixels, below, is the limit that counts
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Skip("unreadable") from None
    except Image.DecompressionBombError:
        raise Skip("too_large") from None
    except Exception:  # noqa: BLE001 -- PIL's parsers raise many kinds of error on a broken header
        raise Skip("truncated") from None
    with image:
        if image.width * image.height > max_pixels:
            raise Skip("too_large")
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)  # a photo's EXIF orientation, as viewers show it
            return to_rgb(upright), ("" if image.mode == "RGB" else image.mode)
        except Exception:  # noqa: BLE001 -- and its decoders on broken pixels
            raise Skip("truncated") from None


def is_utf8(text: str) -> bool:
    """Whether `text` can be stored as UTF-8 (a name that is not comes with surrogates, as os.fsdecode left it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def captions(raw: Raw) -> dict[str, str]:
    """The entry's caption fields: a .txt sidecar is "caption", a .json sidecar's string values are theirs
    (the .txt wins a clash), then the source's own fields, each stripped of a byte-order mark and whitespace;
    Skip when none is non-empty."""
    fields = {}
    for suffix in (".json", ".txt"):
        if suffix not in raw.sidecars:
            continue
        try:
            text = raw.sidecars[suffix].decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Skip("caption_not_utf8") from None
        if suffix == ".txt":
            fields["caption"] = text
            continue
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested deeper than Python's stack
            raise Skip("caption_not_json") from None
        if not isinstance(values, dict):
            raise Skip("caption_not_json")
        fields.update({k: v for k, v in values.items() if isinstance(v, str)})
    fields.update(raw.fields)
    fields = {k: v.lstrip("\ufeff").strip() for k, v in fields.items()}
    if not all(is_utf8(k) and is_utf8(v) for k, v in fields.items()):
        raise Skip("caption_not_utf8")
    if not fields:
        raise Skip("caption_missing")
    if not any(fields.values()):
        raise Skip("caption_empty")
    return fields


def example(key: str, raw: Raw, sizing: Sizing) -> Example:
    """The stored example: image at the bucket of `sizing.sizes` nearest its aspect; Skip when it cannot be used."""
    if raw.error:
        raise Skip(raw.error)
    fields = captions(raw)
    image, converted = decode(raw.image, sizing.max_pixels)
    if upscaled(image.height, image.width, nearest_bucket(sizing.fill, image.height, image.width)):
        raise Skip("too_small")
    return Example(key, fit(image, nearest_bucket(sizing.sizes, image.height, image.width))[0], fields, converted)


# ------------------------------------------------------------------------------------ listing


def printable(name: str) -> str:
    """`name` with the bytes of a file name that is not UTF-8 written as \\x escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def kind(path: Path, real_root: Path) -> str:
    """"file" (a regular file, or a link to one inside `real_root`), "dir" (to be walked), or why it is passed over."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            target = path.resolve(strict=True)
            if not target.is_relative_to(real_root):
                return "link_outside_root"
            return "file" if target.is_file() else "not_a_file"  # a linked directory is never walked: it could loop
        return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "not_a_file"
    except (OSError, RuntimeError):  # a link to nothing, or a loop
        return "broken_link"


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether a relative path matches a glob's parts as glob.glob(recursive=True) does (hidden names only
    when the pattern names them)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return _matches(parts, pattern[1:]) or (bool(parts) and not parts[0].startswith(".")
                                                 and _matches(parts[1:], pattern))
    return (bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0])
            and (pattern[0].startswith(".") or not parts[0].startswith(".")) and _matches(parts[1:], pattern[1:]))


def _walk(root: Path, real_root: Path, pattern: tuple[str, ...] | None) -> Iterator[tuple[Path, str]]:
    """(path, kind) of what is under `root` (with a glob `pattern`, relative to it: what matches it); directories
    are walked, never through a link, so a loop ends."""
    depth = None if pattern is None or "**" in pattern else len(pattern)
    folders = [(root, 1)]
    while folders:
        folder, level = folders.pop()
        try:
            names = os.listdir(folder)
        except OSError:
            yield folder, "file_unreadable"
            continue
        for name in names:
            path = folder / name
            found = kind(path, real_root)
            if found == "dir" and (depth is None or level < depth):
                folders.append((path, level + 1))
            if pattern is None or _matches(path.relative_to(root).parts, pattern):
                yield path, found


@dataclasses.dataclass
class Found:
    """What a user data path holds."""
    root: Path                                        # what keys are relative to
    real_root: Path                                   # the root with its links resolved: nothing read leaves it
    files: list[Path] = dataclasses.field(default_factory=list)   # regular files of the suffixes asked for, sorted
    others: list[Path] = dataclasses.field(default_factory=list)  # the other regular files, sorted
    ignored: dict[str, str] = dataclasses.field(default_factory=dict)  # {name: reason} of what is no entry

    def name(self, path: Path) -> str:
        """How the report names `path`: under the root, printable."""
        return printable(path.relative_to(self.root).as_posix())

    def ignore(self, path: Path, reason: str) -> None:
        self.ignored[self.name(path)] = reason


def counts(ignored: dict[str, str]) -> dict[str, int]:
    """{reason: how many} of what was ignored."""
    return dict(sorted(Counter(ignored.values()).items()))


def files(path: str, name: str, suffixes: tuple[str, ...], what: str) -> Found:
    """The regular files under `path` (a directory, searched recursively, or a glob) and inside its root (the
    directory, or the glob's part before its first wildcard), those ending in `suffixes` apart; ConfigError when
    there is none of those."""
    if not path:
        raise ConfigError(f"config.data.path is empty; set it to {what} for config.data.name='{name}'")
    root, pattern = Path(path).expanduser(), None
    if not root.is_dir():
        if not glob.has_magic(str(root)):
            raise ConfigError(f"config.data.path='{path}' is not a directory (nor a glob); set it to {what}")
        base = Path(*itertools.takewhile(lambda part: not glob.has_magic(part), root.parts))
        if not base.is_dir():
            raise ConfigError(f"config.data.path='{path}': the glob's directory {base} is not a directory; set it to "
                              f"{what}")
        root, pattern = base, root.relative_to(base).parts
    found = Found(root, root.resolve())
    for file, reason in _walk(root, found.real_root, pattern):
        if reason == "file":
            (found.files if file.suffix.lower() in suffixes else found.others).append(file)
        elif reason != "dir":
            found.ignore(file, reason)
        elif file.suffix.lower() in suffixes:
            found.ignore(file, "not_a_file")  # and walked: what it holds counts
    found.files.sort()
    found.others.sort()
    if not found.files:
        ignored = f"; ignored: {counts(found.ignored)}" if found.ignored else ""
        raise ConfigError(f"config.data.path='{path}' holds no images (no {', '.join(suffixes)} files{ignored}); "
                          f"set it to {what}")
    return found


@dataclasses.dataclass
class Listing:
    entries: list[Entry]         # in order, each after the first of its key marked a duplicate
    ignored: dict[str, str]      # {name: reason} of what was found and is no entry


def listing(source: Source) -> Listing:
    """The source's entries and what it ignored, an entry whose key is not UTF-8 among the latter (TFDS, the
    records and the held-out hash store keys as text); ConfigError when there is no entry."""
    found, ignored = source.entries()
    seen, out = set(), []
    for entry in found:
        if not is_utf8(entry.key):
            ignored[printable(entry.key)] = "name_not_utf8"
            continue
        out.append(dataclasses.replace(entry, duplicate=entry.key in seen))
        seen.add(entry.key)
    if not out:
        raise ConfigError(f"config.data.path of config.data.name='{source.name}' holds no images (ignored: "
                          f"{counts(ignored)}); point it at your data (docs/your_data.md)")
    return Listing(out, ignored)


def held_out(keys, num_validation: int) -> set[str]:
    """The `num_validation` keys whose names hash lowest: the held-out split stays put as data is added."""
    return set(sorted(set(keys), key=lambda k: hashlib.sha256(k.encode()).hexdigest())[:num_validation])


def check_split(found: Listing, num_validation: int, name: str) -> None:
    """At least one entry is left for training."""
    unique = sum(not e.duplicate for e in found.entries)
    if num_validation >= unique:
        raise ConfigError(f"config.data.num_validation={num_validation} leaves no training image of the {unique} "
                          f"of config.data.name='{name}'; hold out fewer")


# ------------------------------------------------------------------------------------ splits and report


def split(examples: list[Example], name: str, num_validation: int) -> list[Example]:
    """The `name` split ("train" or "validation") of the examples, kept and skipped, in their order."""
    validation = held_out((ex.key for ex in examples if ex.skipped != "duplicate_key"), num_validation)
    return [ex for ex in examples if (ex.key in validation) == (name == "validation")]


@dataclasses.dataclass(frozen=True)
class Summary:
    """What the split, the buckets and the build report need of an example: neither its image nor its captions."""
    key: str
    skipped: str
    converted: str
    size: tuple[int, int] | None  # the stored image's (height, width); None when skipped
    words: dict[str, int]         # words of each caption field it has; -1 for an empty caption

    def row(self) -> list:
        return [self.key, self.skipped, self.converted, self.size and list(self.size), self.words]

    @classmethod
    def from_row(cls, row: list) -> "Summary":
        key, skipped, converted, size, words = row
        return cls(key, skipped, converted, size and tuple(size), words)


def summarize(ex: Example) -> Summary:
    return Summary(ex.key, ex.skipped, ex.converted, None if ex.image is None else tuple(ex.image.shape[:2]),
                   {field: len(c.split()) if c else -1 for field, c in ex.captions.items()})


def caption_fields(summaries: list[Summary]) -> list[str]:
    """Every caption field of the kept examples, in order of first appearance."""
    return list(dict.fromkeys(field for s in summaries if not s.skipped for field in s.words))


def arrays(examples: list[Example], fields: list[str]) -> dict[str, np.ndarray]:
    """The kept examples as a split: image uint8 [N, H, W, 3] and one object array per caption field."""
    kept = [ex for ex in examples if not ex.skipped]
    out = {"image": np.stack([ex.image for ex in kept])}
    for field in fields:
        out[field] = np.asarray([ex.captions.get(field, "") for ex in kept], object)
    return out


def _words(words: list[int]) -> dict:
    counts = np.asarray([w for w in words if w >= 0])
    stats = {"empty": len(words) - len(counts)}
    if len(counts):
        stats.update(min=int(counts.min()), median=float(np.median(counts)),
                     p90=float(np.percentile(counts, 90)), max=int(counts.max()))
    return stats


def report(summaries: list[Summary], sizes: tuple[Size, ...], ignored: dict[str, str] | None = None) -> dict:
    """Entries read, kept, converted (by source mode), skipped (by reason), per bucket, and words per
    caption per field (min, median, p90, max over the non-empty ones, and how many are empty); with the
    listing's `ignored`, also what it ignored (by reason) and the files skipped whole (by name)."""
    kept = [s for s in summaries if not s.skipped]
    shapes = Counter(s.size for s in kept)
    out = {"entries": len(summaries), "kept": len(kept),
           "converted": dict(sorted(Counter(s.converted for s in kept if s.converted).items())),
           "skipped": dict(sorted(Counter(s.skipped for s in summaries if s.skipped).items())),
           "buckets": {size_name(size): shapes[size] for size in sizes},
           "captions": {field: _words([s.words.get(field, -1) for s in kept]) for field in caption_fields(kept)}}
    if ignored is not None:
        out["ignored"] = counts(ignored)
        out["files_skipped"] = {name: why for name, why in sorted(ignored.items()) if why in WHOLE_FILES}
    return out

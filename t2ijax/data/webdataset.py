"""config.data.name='webdataset': .tar shards whose members are grouped by key, as WebDataset writes them.

  shard-000.tar:  0001.jpg 0001.txt 0002.png 0002.json ...

A member's key is its path up to the first dot of its file name, its extension the rest; consecutive
members of one key are one group, and each image member of a group is an entry captioned by the
group's .txt / .json members. Shards are read in sorted order, members in tar order. A shard that cannot be
read whole (truncated, compressed, not a tar) is skipped and named in the report; members that are not regular
files, captions without an image and members of other extensions are counted as ignored
(t2ijax/data/user_data.py).
"""
import tarfile
from collections.abc import Iterator
from pathlib import Path

import ml_collections

from t2ijax.data import image_folder
from t2ijax.data.folder import CAPTION_SUFFIXES, IMAGE_SUFFIXES
from t2ijax.data.user_data import Entry, Found, Raw, Skip, counts, files, read_or_unreadable
from t2ijax.errors import ConfigError

Span = tuple[int, int]  # (offset, size) of a member's bytes in its shard


def _key_and_suffix(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return f"{folder}/{stem}" if folder else stem, "." + extension.lower()


def _members(shard: Path) -> list[tarfile.TarInfo]:
    """Every member of `shard`; Skip when it cannot be read whole."""
    try:
        tar = tarfile.open(shard, "r:")  # uncompressed only: a member is read at its offset in the file
    except (tarfile.TarError, OSError, EOFError, ValueError):
        raise Skip("file_unreadable") from None
    try:
        with tar:
            members = tar.getmembers()
        with open(shard, "rb") as f:
            f.seek(tar.offset)
            complete = f.read(tarfile.BLOCKSIZE) == bytes(tarfile.BLOCKSIZE)  # the end-of-archive marker
    except (tarfile.TarError, OSError, EOFError, ValueError):
        complete = False
    if not complete:
        raise Skip("file_truncated")
    return members


def _groups(members: list[tarfile.TarInfo]) -> Iterator[tuple[str, dict[str, Span]]]:
    """(key, {suffix: span}) of each run of consecutive members of one key (a repeated suffix starts a new run)."""
    key, group = None, {}
    for member in members:
        member_key, suffix = _key_and_suffix(member.name)
        if member_key != key or suffix in group:
            if group:
                yield key, group
            key, group = member_key, {}
        group[suffix] = (member.offset_data, member.size)
    if group:
        yield key, group


def _read(shard, span: Span) -> bytes:
    shard.seek(span[0])
    return shard.read(span[1])


def _raw(path: str, span: Span, sidecars: tuple[tuple[str, Span], ...]) -> Raw:
    with open(path, "rb") as shard:
        return Raw(_read(shard, span), {suffix: _read(shard, where) for suffix, where in sidecars})


class WebDatasetSource:
    name = "webdataset"

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.path = cfg.path

    def _shards(self) -> Found:
        found = files(self.path, self.name, (".tar",), "a folder of .tar shards (or a glob of them)")
        for other in found.others:
            found.ignore(other, "other_file")
        return found

    def entries(self) -> tuple[list[Entry], dict[str, str]]:
        found, out = self._shards(), []
        for shard in found.files:
            try:
                members = _members(shard)
            except Skip as skip:
                found.ignore(shard, skip.reason)
                continue
            for member in members:
                if not member.isfile():
                    found.ignored[f"{found.name(shard)}/{member.name}"] = "not_a_file"
            for key, group in _groups([m for m in members if m.isfile()]):
                has_image = any(suffix in IMAGE_SUFFIXES for suffix in group)
                sidecars = tuple((s, group[s]) for s in CAPTION_SUFFIXES if s in group)
                for suffix, span in group.items():
                    if suffix in IMAGE_SUFFIXES:
                        out.append(Entry(key, (str(shard), span, sidecars)))
                    elif suffix not in CAPTION_SUFFIXES:
                        found.ignored[f"{found.name(shard)}/{key}{suffix}"] = "other_file"
                    elif not has_image:
                        found.ignored[f"{found.name(shard)}/{key}{suffix}"] = "orphan_caption"
        if not out:
            ignored = f" (ignored: {counts(found.ignored)})" if found.ignored else ""
            raise ConfigError(f"the .tar shards of config.data.path='{self.path}' hold no image members "
                              f"({', '.join(IMAGE_SUFFIXES)}){ignored}; write each image as KEY.jpg next to KEY.txt")
        return out, found.ignored

    def read(self, entries: list[Entry]) -> Iterator[Raw]:
        for entry in entries:
            yield read_or_unreadable(lambda: _raw(*entry.where))

    def fingerprint(self) -> str:
        found = self._shards()
        return image_folder.fingerprint(found.root, found.files, found.ignored)

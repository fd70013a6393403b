"""config.data.name='webdataset': .tar shards whose members are grouped by key, as WebDataset writes them.

  shard-000.tar:  0001.jpg 0001.txt 0002.png 0002.json ...

A member's key is its path up to the first dot of its file name, its extension the rest; consecutive
members of one key are one group, and each image member of a group is an entry captioned by the
group's .txt / .json members. Shards are read in sorted order, members in tar order.
"""
import tarfile
from collections.abc import Iterator
from pathlib import Path

import ml_collections

from t2ijax.data import image_folder
from t2ijax.data.folder import CAPTION_SUFFIXES, IMAGE_SUFFIXES
from t2ijax.data.user_data import Entry, Raw, files
from t2ijax.errors import ConfigError

Span = tuple[int, int]  # (offset, size) of a member's bytes in its shard


def _key_and_suffix(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return f"{folder}/{stem}" if folder else stem, "." + extension.lower()


def _groups(shard: Path) -> Iterator[tuple[str, dict[str, Span]]]:
    """(key, {suffix: span}) of each run of consecutive members of one key (a repeated suffix starts a new run)."""
    key, group = None, {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                member_key, suffix = _key_and_suffix(member.name)
                if member_key != key or suffix in group:
                    if group:
                        yield key, group
                    key, group = member_key, {}
                group[suffix] = (member.offset_data, member.size)
    except tarfile.TarError as error:
        raise ConfigError(f"{shard} is not a readable tar file ({error}); remove or replace it") from None
    if group:
        yield key, group


def _read(shard, span: Span) -> bytes:
    shard.seek(span[0])
    return shard.read(span[1])


class WebDatasetSource:
    name = "webdataset"

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.path = cfg.path

    def _shards(self) -> tuple[Path, list[Path]]:
        return files(self.path, self.name, (".tar",), "a folder of .tar shards (or a glob of them)")

    def entries(self) -> list[Entry]:
        out, shards = [], self._shards()[1]
        for shard in shards:
            for key, group in _groups(shard):
                sidecars = tuple((s, group[s]) for s in CAPTION_SUFFIXES if s in group)
                out += [Entry(key, (str(shard), span, sidecars)) for s, span in group.items() if s in IMAGE_SUFFIXES]
        if not out:
            raise ConfigError(f"the .tar shards of config.data.path='{self.path}' hold no image members "
                              f"({', '.join(IMAGE_SUFFIXES)}); write each image as KEY.jpg next to KEY.txt")
        return out

    def read(self, entries: list[Entry]) -> Iterator[Raw]:
        for entry in entries:
            path, span, sidecars = entry.where
            with open(path, "rb") as shard:
                yield Raw(_read(shard, span), {suffix: _read(shard, where) for suffix, where in sidecars})

    def fingerprint(self) -> str:
        root, shards = self._shards()
        return image_folder.fingerprint(str(root), shards)

"""config.data.name='image_folder': a directory of images, each captioned by same-name sidecars.

  photos/cat_01.jpg   photos/cat_01.txt    "A grey cat asleep on a red sofa."  (the field "caption")
  photos/sub/dog.png  photos/sub/dog.json  {"long": "A brown dog ...", "short": "A dog."}  (one field per key)

An entry's key is its path under the folder without the suffix, so a.jpg and a.png share a.txt and
the second of them (in sorted order) is a duplicate. Nothing outside the folder (the glob's part before its
first wildcard) is read: a link out of it is counted as ignored, as are caption files without an image and
files of other suffixes (t2ijax/data/user_data.py). The fingerprint knows captions by their bytes, images by
their size and modification time.
"""
import os
from collections.abc import Iterator
from pathlib import Path

import ml_collections

from t2ijax.data import image_folder
from t2ijax.data.user_data import Entry, Found, Raw, files, kind, read_or_unreadable

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
CAPTION_SUFFIXES = (".txt", ".json")


def _key(found: Found, path: Path) -> str:
    return path.relative_to(found.root).with_suffix("").as_posix()


def _sidecar(found: Found, path: Path) -> bool:
    """Whether the sidecar `path` is there to read (a regular file in the root, or a link to one); anything
    else of that name (a link out of the root, a directory) is counted as ignored."""
    what = kind(path, found.real_root) if os.path.lexists(path) else "absent"
    if what not in ("file", "absent"):
        found.ignore(path, "not_a_file" if what == "dir" else what)
    return what == "file"


class FolderSource:
    name = "image_folder"

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.path = cfg.path

    def _listing(self) -> tuple[Found, list[Entry]]:
        found = files(self.path, self.name, IMAGE_SUFFIXES, "a folder of images with same-name .txt or .json captions")
        captions = {}
        for path in found.others:
            if path.suffix in CAPTION_SUFFIXES:
                captions[path] = _key(found, path)
            else:
                found.ignore(path, "other_file")
        out = []
        for image in found.files:
            sidecars = tuple((suffix, str(path)) for suffix in CAPTION_SUFFIXES
                             if (path := image.with_suffix(suffix)) in captions or _sidecar(found, path))
            out.append(Entry(_key(found, image), (str(image), sidecars)))
        keys = {entry.key for entry in out}
        for path, key in captions.items():
            if key not in keys:
                found.ignore(path, "orphan_caption")
        return found, out

    def entries(self) -> tuple[list[Entry], dict[str, str]]:
        found, out = self._listing()
        return out, found.ignored

    def read(self, entries: list[Entry]) -> Iterator[Raw]:
        for entry in entries:
            image, sidecars = entry.where
            yield read_or_unreadable(lambda: Raw(Path(image).read_bytes(),
                                                 {suffix: Path(path).read_bytes() for suffix, path in sidecars}))

    def fingerprint(self) -> str:
        found, entries = self._listing()
        read = [Path(path) for entry in entries for path in (entry.where[0], *(p for _, p in entry.where[1]))]
        return image_folder.fingerprint(found.root, read, found.ignored, by_content=CAPTION_SUFFIXES)

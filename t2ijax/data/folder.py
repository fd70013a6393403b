"""config.data.name='image_folder': a directory of images, each captioned by same-name sidecars.

  photos/cat_01.jpg   photos/cat_01.txt    "A grey cat asleep on a red sofa."  (the field "caption")
  photos/sub/dog.png  photos/sub/dog.json  {"long": "A brown dog ...", "short": "A dog."}  (one field per key)

An entry's key is its path under the folder without the suffix, so a.jpg and a.png share a.txt and
the second of them (in sorted order) is a duplicate.
"""
from collections.abc import Iterator
from pathlib import Path

import ml_collections

from t2ijax.data import image_folder
from t2ijax.data.user_data import Entry, Raw, files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
CAPTION_SUFFIXES = (".txt", ".json")


class FolderSource:
    name = "image_folder"

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.path = cfg.path

    def _images(self) -> tuple[Path, list[Path]]:
        return files(self.path, self.name, IMAGE_SUFFIXES, "a folder of images with same-name .txt or .json captions")

    def entries(self) -> list[Entry]:
        root, images = self._images()
        return [Entry(p.relative_to(root).with_suffix("").as_posix(), (str(p),)) for p in images]

    def read(self, entries: list[Entry]) -> Iterator[Raw]:
        for entry in entries:
            image = Path(entry.where[0])
            yield Raw(image.read_bytes(), {suffix: image.with_suffix(suffix).read_bytes() for suffix in CAPTION_SUFFIXES
                                           if image.with_suffix(suffix).is_file()})

    def fingerprint(self) -> str:
        return image_folder.fingerprint(self.path)

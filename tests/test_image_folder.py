"""config.data.name='image_folder': your own captioned images, squared, split by name and keyed by content."""
import os

import numpy as np
import pytest
from PIL import Image

from configs import base
from t2ijax.config import validate
from t2ijax.data.folder import FolderSource
from t2ijax.data.manifest import records_key
from t2ijax.data.sources import load_split
from t2ijax.data.user_data import held_out, listing
from t2ijax.errors import ConfigError


def write(directory, name, pixels, caption="a photo"):
    directory.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(directory / name)
    if caption is not None:
        (directory / name).with_suffix(".txt").write_text(caption + "\n")


def folder_config(path, data_dir="data", **data):
    c = base.get_config()
    c.data.update({"name": "image_folder", "path": str(path), "data_dir": str(data_dir), "resolution": 8,
                   "num_validation": 2, **data})
    return c


def test_images_are_center_cropped_resized_and_captioned(tmp_path):
    images = tmp_path / "images"
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = (255, 0, 0)  # the centred square is red, the sides blue
    wide[:, :10] = wide[:, 30:] = (0, 0, 255)
    write(images, "wide.png", wide, "a red square")
    write(images, "sub_gray.jpg", np.full((12, 12), 128, np.uint8), "a gray one")  # grayscale -> RGB
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 1] = rgba[..., 3] = 255
    write(images / "nested", "green.png", rgba, "a green one")
    write(images, "small.png", np.full((4, 4, 3), 7, np.uint8))  # fewer pixels than 8x8: skipped
    config = folder_config(images, tmp_path / "data", num_validation=1)
    data = {s: load_split(config.data, s) for s in ("train", "validation")}
    assert len(data["train"]["image"]) + len(data["validation"]["image"]) == 3
    images = np.concatenate([data["train"]["image"], data["validation"]["image"]])
    captions = list(data["train"]["caption"]) + list(data["validation"]["caption"])
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8 and set(data["train"]) == {"image", "caption"}
    by_caption = dict(zip(captions, images))
    np.testing.assert_array_equal(by_caption["a red square"], np.broadcast_to([255, 0, 0], (8, 8, 3)))
    np.testing.assert_array_equal(by_caption["a green one"], np.broadcast_to([0, 255, 0], (8, 8, 3)))
    assert abs(int(by_caption["a gray one"].astype(int).mean()) - 128) <= 2


def test_held_out_split_depends_on_names_only(tmp_path):
    for i in range(10):
        write(tmp_path / "a", f"{i}.png", np.full((8, 8, 3), i, np.uint8))
        write(tmp_path / "b", f"{i}.png", np.full((8, 8, 3), 9 - i, np.uint8), caption="other")
    first, second = ({e.key for e in listing(FolderSource(folder_config(tmp_path / d).data)).entries} for d in "ab")
    assert first == second == {str(i) for i in range(10)}
    assert held_out(first, 3) == held_out(second, 3) and len(held_out(first, 3)) == 3
    assert held_out(first | {"10", "11"}, 3) <= held_out(first, 3) | {"10", "11"}  # it stays put as files are added


def test_records_are_keyed_by_the_folders_files(tmp_path):
    images = tmp_path / "images"
    for i in range(3):
        write(images, f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    config = folder_config(images, tmp_path / "data")
    before = records_key(config)
    assert records_key(config) == before
    write(images, "3.png", np.zeros((8, 8, 3), np.uint8))
    assert records_key(config) != before
    assert load_split(config.data, "train")["image"].shape == (2, 8, 8, 3)


def test_bad_folders_are_named_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="config.data.path is empty"):
        validate(folder_config(""), 1)
    with pytest.raises(ConfigError, match="is not a directory"):
        validate(folder_config(tmp_path / "missing"), 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no images"):
        validate(folder_config(tmp_path / "empty"), 1)
    write(tmp_path / "f", "a.png", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path / "f", "b.png", np.zeros((8, 8, 3), np.uint8), caption=None)
    with pytest.raises(ConfigError, match="num_validation=2 leaves no training image of the 2"):
        validate(folder_config(tmp_path / "f"), 1)
    (tmp_path / "f" / "c.jpg").write_bytes(b"not an image")
    (tmp_path / "f" / "c.txt").write_text("broken")
    with pytest.raises(ConfigError, match=r"none of the 1 validation entries .* is usable \(skipped: "
                                          r"\{'unreadable': 1\}\)"):  # c's name hashes lowest
        load_split(folder_config(tmp_path / "f", tmp_path / "data", num_validation=1).data, "validation")
    shapes_with_path = base.get_config()
    shapes_with_path.data.path = str(tmp_path)
    with pytest.raises(ConfigError, match="is read by the user data formats only"):
        validate(shapes_with_path, 1)


def test_a_caption_edit_that_keeps_its_size_and_time_changes_the_fingerprint(tmp_path):
    images = tmp_path / "images"
    write(images, "a.png", np.zeros((8, 8, 3), np.uint8), "a red cat")
    caption = images / "a.txt"
    for path, colour in ((images, "tan"), (images / "*.png", "red")):  # a glob's sidecars count too
        source = FolderSource(folder_config(path).data)
        before, stat = source.fingerprint(), caption.stat()
        caption.write_text(f"a {colour} dog\n")  # same size, old time: as cp -p, rsync -t or tar leave it
        os.utime(caption, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert caption.stat().st_size == stat.st_size and source.fingerprint() != before

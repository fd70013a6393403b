"""config.data.name='image_folder': your own captioned images, squared, split by name and keyed by content."""
import numpy as np
import pytest
from PIL import Image

from configs import base
from t2ijax.config import validate
from t2ijax.data import image_folder
from t2ijax.data.latent_cache import latent_cache_dir
from t2ijax.data.sources import load_split
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import load_autoencoder


def write(directory, name, pixels, caption="a photo"):
    directory.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(directory / name)
    if caption is not None:
        (directory / name).with_suffix(".txt").write_text(caption + "\n")


def folder_config(path, **data):
    c = base.get_config()
    c.data.update({"name": "image_folder", "path": str(path), "resolution": 8, "num_validation": 2, **data})
    return c


def test_images_are_center_cropped_resized_and_captioned(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = (255, 0, 0)  # the centred square is red, the sides blue
    wide[:, :10] = wide[:, 30:] = (0, 0, 255)
    write(tmp_path, "wide.png", wide, "a red square")
    Image.fromarray(np.full((12, 12), 128, np.uint8), "L").save(tmp_path / "sub_gray.jpg")  # grayscale -> RGB
    (tmp_path / "sub_gray.txt").write_text("a gray one")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 1] = rgba[..., 3] = 255
    write(tmp_path / "nested", "green.png", rgba, "a green one")
    write(tmp_path, "small.png", np.full((4, 4, 3), 7, np.uint8))
    split = image_folder.split_files(str(tmp_path), num_validation=1)
    assert len(split["train"]) == 3 and len(split["validation"]) == 1
    every = {p.name: i for i, p in enumerate(split["train"] + split["validation"])}
    data = {s: image_folder.load_split(str(tmp_path), (8, 8), s, 1) for s in ("train", "validation")}
    images = np.concatenate([data["train"]["image"], data["validation"]["image"]])
    captions = list(data["train"]["caption_long"]) + list(data["validation"]["caption_long"])
    assert images.shape == (4, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[every["wide.png"]], np.broadcast_to([255, 0, 0], (8, 8, 3)))
    np.testing.assert_array_equal(images[every["green.png"]], np.broadcast_to([0, 255, 0], (8, 8, 3)))
    assert abs(int(images[every["sub_gray.jpg"]].astype(int).mean()) - 128) <= 2
    assert captions[every["wide.png"]] == "a red square" and captions[every["small.png"]] == "a photo"
    assert list(data["train"]["caption_short"]) == list(data["train"]["caption_long"])


def test_held_out_split_depends_on_names_only(tmp_path):
    for i in range(10):
        write(tmp_path / "a", f"{i}.png", np.full((8, 8, 3), i, np.uint8))
        write(tmp_path / "b", f"{i}.png", np.full((8, 8, 3), 9 - i, np.uint8), caption="other")
    first, second = (image_folder.split_files(str(tmp_path / d), 3) for d in "ab")
    assert [p.name for p in first["validation"]] == [p.name for p in second["validation"]]
    assert set(first["train"]).isdisjoint(first["validation"]) and len(first["train"]) == 7


def test_latent_cache_is_keyed_by_the_folders_files(tmp_path):
    write(tmp_path, "0.png", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path, "1.png", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path, "2.png", np.zeros((8, 8, 3), np.uint8))
    config, autoencoder = folder_config(tmp_path), load_autoencoder("identity")
    before = latent_cache_dir(config, autoencoder)
    assert latent_cache_dir(config, autoencoder) == before
    write(tmp_path, "3.png", np.zeros((8, 8, 3), np.uint8))
    assert latent_cache_dir(config, autoencoder) != before
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
    with pytest.raises(ConfigError, match=r"1 of 2 images in .* have no caption, e\.g\. .*b\.png; write its caption"):
        validate(folder_config(tmp_path / "f"), 1)
    (tmp_path / "f" / "b.txt").write_text("now captioned")
    with pytest.raises(ConfigError, match="num_validation=2 leaves no training image of the 2"):
        validate(folder_config(tmp_path / "f"), 1)
    (tmp_path / "f" / "c.jpg").write_bytes(b"not an image")
    (tmp_path / "f" / "c.txt").write_text("broken")
    with pytest.raises(ConfigError, match="c.jpg is not a readable image"):
        for split in ("train", "validation"):
            load_split(folder_config(tmp_path / "f", num_validation=1).data, split)
    shapes_with_path = base.get_config()
    shapes_with_path.data.path = str(tmp_path)
    with pytest.raises(ConfigError, match="is read by config.data.name='image_folder' only"):
        validate(shapes_with_path, 1)

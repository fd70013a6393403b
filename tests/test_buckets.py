"""Aspect-ratio buckets: the grid, assignment, multi-aspect shapes, bucketed image folders, config errors."""
import numpy as np
import pytest
from PIL import Image

from configs import shapes_tiny
from t2ijax import registry
from t2ijax.config import validate
from t2ijax.data import buckets, shapes, sources
from t2ijax.errors import ConfigError

GRIDS = [  # (resolution, multiple, min_aspect, max_aspect, tolerance)
    (32, 4, 0.5, 2.0, 0.1),
    (32, 8, 0.5, 2.0, 0.1),
    (64, 2, 0.25, 4.0, 0.2),
    (256, 16, 0.5, 2.0, 0.1),
    (512, 32, 0.5, 2.0, 0.05),
    (1024, 16, 0.33, 3.0, 0.1),
]


@pytest.mark.parametrize("resolution, multiple, low, high, tolerance", GRIDS)
def test_grid_properties(resolution, multiple, low, high, tolerance):
    grid = buckets.bucket_grid(resolution, multiple, low, high, tolerance)
    area = resolution**2
    assert (resolution, resolution) in grid and len(grid) > 1
    assert len({h for h, _ in grid}) == len(grid)  # one bucket per height, so no duplicates
    aspects = [w / h for h, w in grid]
    assert aspects == sorted(aspects)
    for height, width in grid:
        assert height % multiple == 0 and width % multiple == 0
        assert low <= width / height <= high
        assert abs(height * width - area) <= tolerance * area
        tokens = height * width // multiple**2
        assert abs(tokens - area // multiple**2) <= tolerance * area // multiple**2
        for other in (width - multiple, width + multiple):  # the width nearest the square's area
            assert abs(height * other - area) >= abs(height * width - area)


def test_grid_by_hand():
    # 32 px in steps of 8: heights 24, 32, 40 take widths 40, 32, 24 (960, 1024, 960 px); height 16 would
    # need width 64 (aspect 4), height 48 width 24 (aspect 0.5, but 1152 px is 12.5% off).
    assert buckets.bucket_grid(32, 8) == ((40, 24), (32, 32), (24, 40))
    # A wider tolerance admits (48, 24); a range of just the square leaves the square.
    assert (48, 24) in buckets.bucket_grid(32, 8, tolerance=0.15)
    assert buckets.bucket_grid(32, 8, min_aspect=1.0, max_aspect=1.0) == ((32, 32),)


@pytest.mark.parametrize("args, message", [
    ((30, 8), "resolution 30 is not a positive multiple of 8.*use 32"),
    ((0, 8), "resolution 0 is not a positive multiple of 8.*use 8"),
    ((32, 0), "the side multiple 0 .* must be positive"),
    ((32, 4, 1.5, 2.0), "min_aspect <= 1 <= max_aspect"),
    ((32, 4, 0.5, 0.9), "min_aspect <= 1 <= max_aspect"),
    ((32, 4, 0.0, 2.0), "0 < min_aspect"),
    ((32, 4, 0.5, 2.0, 0.0), "token_tolerance=0.0 must be in \\(0, 1\\)"),
    ((32, 4, 0.5, 2.0, 1.0), "token_tolerance=1.0 must be in \\(0, 1\\)"),
])
def test_invalid_grid_arguments(args, message):
    with pytest.raises(ConfigError, match=message):
        buckets.bucket_grid(*args)


def test_nearest_bucket():
    grid = buckets.bucket_grid(32, 4)
    for height, width in grid:  # exact ratios, at any scale
        assert buckets.nearest_bucket(grid, height, width) == (height, width)
        assert buckets.nearest_bucket(grid, 7 * height, 7 * width) == (height, width)
    assert buckets.nearest_bucket(grid, 100, 1) == grid[0]  # beyond the range: the end buckets
    assert buckets.nearest_bucket(grid, 1, 100) == grid[-1]
    assert buckets.nearest_bucket(grid, 1.0, 1.1) == (32, 32)  # log 1.1 is nearer 0 than log(36 / 28)
    assert buckets.nearest_bucket(grid, 1.0, 1.2) == (28, 36)
    assert buckets.nearest_bucket(((32, 64), (64, 32)), 50, 50) == (32, 64)  # a tie: the first


def test_grid_from_config():
    c = shapes_tiny.get_config()  # 32 px, pixel space, patch 4
    assert buckets.grid(c) == ((32, 32),)
    c.resolution.update(buckets=True, min_aspect=0.6, max_aspect=1.5, token_tolerance=0.05)
    assert buckets.grid(c) == buckets.bucket_grid(32, 4, 0.6, 1.5, 0.05)
    c.model.patch_size = 8
    assert buckets.grid(c) == buckets.bucket_grid(32, 8, 0.6, 1.5, 0.05)


# ------------------------------------------------------------------------------------------ shapes


def _shapes_config(data_dir, ratios):
    c = shapes_tiny.get_config()
    c.data.update(data_dir=data_dir, num_train=12, num_validation=5, aspect_ratios=ratios)
    c.resolution.buckets = True
    return c


def test_shapes_multi_aspect_groups(tmp_path):
    # Ratio 1.05 falls in the square bucket too, so it holds the examples i = 0 and 2 mod 3.
    c = _shapes_config(str(tmp_path), (1.0, 2.0, 1.05))
    grid = buckets.grid(c)
    wide = buckets.nearest_bucket(grid, 1, 2.0)
    assert wide == (24, 44)
    for split, num in (("train", 12), ("validation", 5)):
        groups, report = sources.load_buckets(c.data, split, grid)
        members = {(32, 32): [i for i in range(num) if i % 3 != 1], wide: [i for i in range(num) if i % 3 == 1]}
        assert list(groups) == [s for s in grid if s in members]  # in the grid's order
        assert report["buckets"] == {buckets.size_name(s): len(members.get(s, ())) for s in grid}
        assert report["skipped"] == {}  # reasons that occurred only
        for size, data in groups.items():
            assert data.keys() == sources.load_split(c.data, split).keys()
            # The same scenes as the square dataset's indices, drawn at the bucket's size.
            expected = {e["caption_long"]: e for e in (shapes.example(split, i, *size) for i in members[size])}
            assert sorted(data["caption_long"]) == sorted(expected)
            assert data["image"].shape == (len(members[size]), *size, 3)
            for caption, image, position in zip(data["caption_long"], data["image"], data["position"]):
                np.testing.assert_array_equal(image, expected[caption]["image"])
                np.testing.assert_array_equal(position, expected[caption]["position"])
        again, _ = sources.load_buckets(c.data, split, grid)
        for size in groups:
            for key in groups[size]:
                np.testing.assert_array_equal(again[size][key], groups[size][key])


def test_square_shapes_are_one_group_equal_to_load_split(tmp_path):
    c = _shapes_config(str(tmp_path), (1.0,))
    expected = sources.load_split(c.data, "train")
    for grid in (buckets.grid(c), ((32, 32),)):
        groups, report = sources.load_buckets(c.data, "train", grid)
        assert list(groups) == [(32, 32)] and report["buckets"]["32x32"] == 12
        for key in expected:
            np.testing.assert_array_equal(groups[(32, 32)][key], expected[key])


def test_validation_split_at_any_size(tmp_path):
    c = _shapes_config(str(tmp_path), (1.0,))
    wide = sources.load_split(c.data, "validation", (32, 64))
    assert wide["image"].shape == (5, 32, 64, 3)
    assert sorted(wide["caption_long"]) == sorted(sources.load_split(c.data, "validation")["caption_long"])
    expected = {e["caption_long"]: e for e in (shapes.example("validation", i, 32, 64) for i in range(5))}
    for caption, image in zip(wide["caption_long"], wide["image"]):
        np.testing.assert_array_equal(image, expected[caption]["image"])


# ----------------------------------------------------------------------------------- image folders


def _write(directory, name, height, width, caption="a photo"):
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :, 0] = 200
    Image.fromarray(pixels).save(directory / name)
    (directory / name).with_suffix(".txt").write_text(caption + "\n")


def _folder_data(path, data_dir, **data):
    c = shapes_tiny.get_config()
    c.data.update(name="image_folder", path=str(path), data_dir=str(data_dir), **data)
    return c.data


def test_image_folder_buckets_by_each_images_aspect(tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    grid = buckets.bucket_grid(32, 4)  # (44, 24) ... (32, 32) ... (24, 44)
    wide = np.zeros((24, 100, 3), np.uint8)  # aspect 4.2: the widest bucket, 24x44
    wide[:, 28:72] = (255, 0, 0)  # the centred 24x44 crop is red, the sides blue
    wide[:, :28] = wide[:, 72:] = (0, 0, 255)
    Image.fromarray(wide).save(images / "wide.png")
    (images / "wide.txt").write_text("a wide one")
    _write(images, "tall.png", 60, 30)
    _write(images, "square.png", 32, 32)
    _write(images, "big_square.png", 100, 100)
    _write(images, "landscape.png", 40, 50)  # aspect 1.25: nearest 28x36
    _write(images, "tiny.png", 20, 40)  # 800 px: fewer than the smallest bucket's 960
    (images / "broken.jpg").write_bytes(b"not an image")
    (images / "broken.txt").write_text("broken")
    with caplog.at_level("WARNING"):
        groups, report = sources.load_buckets(_folder_data(images, tmp_path / "data", num_validation=0), "train", grid)
    assert report["skipped"] == {"too_small": 1, "unreadable": 1}
    counts = {(24, 44): 1, (44, 24): 1, (32, 32): 2, (28, 36): 1}
    assert report["buckets"] == {buckets.size_name(s): counts.get(s, 0) for s in grid}
    assert list(groups) == [(44, 24), (32, 32), (28, 36), (24, 44)]  # the grid's order, not the files
    assert sum("kept 5 of 7 entries, skipped {'too_small': 1, 'unreadable': 1}" in r.getMessage()
               for r in caplog.records) == 1
    for size, data in groups.items():
        assert data["image"].shape[1:] == (*size, 3) and data["image"].dtype == np.uint8
        assert len(data["caption"]) == len(data["image"])
    assert list(groups[(24, 44)]["caption"]) == ["a wide one"]
    np.testing.assert_array_equal(groups[(24, 44)]["image"][0], np.broadcast_to([255, 0, 0], (24, 44, 3)))


def test_image_folder_square_grid_is_load_split(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, (height, width) in enumerate([(8, 8), (8, 16), (16, 8)]):
        _write(images, f"{i}.png", height, width, caption=str(i))
    data = _folder_data(images, tmp_path / "data", resolution=8, num_validation=1)
    expected = sources.load_split(data, "train")
    groups, report = sources.load_buckets(data, "train", ((8, 8),))
    assert list(groups) == [(8, 8)] and report["buckets"] == {"8x8": 2}
    for key in expected:
        np.testing.assert_array_equal(groups[(8, 8)][key], expected[key])


def test_image_folder_with_nothing_that_fits(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _write(images, "a.png", 8, 8)
    (images / "b.png").write_bytes(b"not an image")
    (images / "b.txt").write_text("broken")
    with pytest.raises(ConfigError, match=r"none of the 2 train entries of config.data.path=.* is usable \(skipped: "
                                          r"\{'too_small': 1, 'unreadable': 1\}\)"):
        sources.load_buckets(_folder_data(images, tmp_path / "data", num_validation=0), "train",
                             buckets.bucket_grid(32, 4))


# ------------------------------------------------------------------------------------ config errors


def test_multi_aspect_config_validates():
    c = shapes_tiny.get_config()
    c.resolution.buckets = True
    c.data.aspect_ratios = (0.5, 1.0, 2.0)
    validate(c, 1)


def _folder_config(tmp_path):
    for i in range(3):
        _write(tmp_path, f"{i}.png", 8, 8)
    c = shapes_tiny.get_config()
    c.data.update(name="image_folder", path=str(tmp_path), num_validation=1)
    return c


@pytest.mark.parametrize("change, message", [
    ({"data.aspect_ratios": (1.0, -2.0)}, r"aspect_ratios=\(1.0, -2.0\) must be positive numbers"),
    ({"data.aspect_ratios": ()}, r"aspect_ratios=\(\) must be positive numbers"),
    ({"data.aspect_ratios": ("wide",)}, "must be positive numbers"),
    ({"data.aspect_ratios": (1.0, 2.0), "resolution.buckets": False}, "need config.resolution.buckets=True"),
    ({"data.aspect_ratios": (1.0, 3.0)}, "has 3.0, outside config.resolution.min_aspect=0.5..max_aspect=2.0"),
    ({"resolution.min_aspect": 1.2}, "min_aspect=1.2 and max_aspect=2.0 must satisfy"),
    ({"resolution.token_tolerance": 1.5}, "token_tolerance=1.5 must be in"),
])
def test_bucket_config_errors(change, message):
    c = shapes_tiny.get_config()
    c.resolution.buckets = True
    c.update_from_flattened_dict(change)
    with pytest.raises(ConfigError, match=message):
        validate(c, 1)


def test_aspect_ratios_are_for_the_synthetic_datasets_only(tmp_path):
    c = shapes_tiny.get_config()
    c.data.update(name="compose", aspect_ratios=(1.0, 2.0))
    c.resolution.buckets = True
    validate(c, 1)  # compose draws its scenes at any aspect, as shapes does
    c = _folder_config(tmp_path)
    c.resolution.buckets = True
    validate(c, 1)
    c.data.aspect_ratios = (1.0, 2.0)
    with pytest.raises(ConfigError, match=r"applies to the synthetic datasets only \(compose, shapes\); "
                                          r"config.data.name='image_folder'"):
        validate(c, 1)


def test_datasets_without_a_bucketed_loader(monkeypatch):
    monkeypatch.setitem(registry.NAMES, "data.name", (*registry.NAMES["data.name"], "plain"))
    monkeypatch.setitem(sources.DATASETS._entries, "plain", lambda cfg, split, size: {})
    c = shapes_tiny.get_config()
    c.data.name = "plain"
    validate(c, 1)
    c.resolution.buckets = True
    with pytest.raises(ConfigError, match="config.data.name='plain' has no bucketed loader .* set "
                                          "config.resolution.buckets=False"):
        validate(c, 1)

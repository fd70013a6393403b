"""Augmentation views: the mirror with left and right swapped in its captions, deterministic crops, and
their latents cached per view, keyed on the augmentation and shared out over processes."""
import os

import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from t2ijax.data import augmentation, latent_cache
from t2ijax.data.augmentation import View, crop_boxes, swap_left_right, view_captions, view_images, views_of
from t2ijax.data.latent_cache import LatentCache, latent_cache_dir
from t2ijax.models.autoencoders.posterior import Posterior


def _images(n=5, height=16, width=16):
    return np.random.default_rng(0).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def _data_cfg(augmentation_name="flip_crop", crop_views=2, crop_min_scale=0.5):
    return ml_collections.ConfigDict(dict(augmentation=augmentation_name, crop_views=crop_views,
                                          crop_min_scale=crop_min_scale))


def test_views_of_each_augmentation():
    assert views_of(_data_cfg("none")) == (View(),)
    assert views_of(_data_cfg("flip")) == (View(), View(flipped=True))
    assert views_of(_data_cfg("crop")) == (View(), View(crop=0), View(crop=1))
    assert views_of(_data_cfg("flip_crop")) == (View(), View(flipped=True), View(crop=0), View(crop=1),
                                                View(True, 0), View(True, 1))


def test_flip_view_is_the_mirror_with_left_and_right_swapped_as_whole_words():
    images = _images()
    views = views_of(_data_cfg("flip"))
    out = view_images(images, views, _data_cfg("flip"))
    np.testing.assert_array_equal(out[:, 0], images)
    np.testing.assert_array_equal(out[:, 1], images[:, :, ::-1])
    # The shapes' captions: "on the left", "at the top left", two objects listed left before right.
    assert (swap_left_right("A large red circle on the left and a small blue square on the right, on a white "
                            "background.") == "A large red circle on the right and a small blue square on the left, "
                                              "on a white background.")
    assert swap_left_right("Two triangles at the top left; LEFT, Right.") == "Two triangles at the top right; RIGHT, Left."
    untouched = "An upright, brightly lit leftover copyright sign, rightly at the bottom."
    assert swap_left_right(untouched) == untouched
    captions = np.array([["a circle on the left", "left"], ["", "a square"]], object)
    swapped = view_captions(captions, views)
    assert swapped.shape == (2, 2, 2) and swapped[0, 1].tolist() == ["a circle on the right", "right"]
    assert swapped[:, 0].tolist() == captions.tolist() and swapped[1, 1].tolist() == ["", "a square"]


@pytest.mark.parametrize("size", [(16, 16), (16, 32)])
def test_crop_views_are_deterministic_and_within_bounds(size):
    cfg = _data_cfg("crop", crop_views=3, crop_min_scale=0.5)
    height, width = size
    boxes = crop_boxes(40, size, cfg)
    np.testing.assert_array_equal(crop_boxes(7, size, cfg), boxes[:7])  # crop k of example i: the same in any build
    left, top, right, bottom = np.moveaxis(boxes, -1, 0)
    assert (left >= 0).all() and (top >= 0).all() and (right <= width).all() and (bottom <= height).all()
    crop_height, crop_width = bottom - top, right - left
    assert (crop_height >= 0.5 * height).all() and crop_height.min() < 0.6 * height
    np.testing.assert_allclose(crop_width / crop_height, width / height)  # the image's aspect
    images = _images(4, *size)
    views = views_of(cfg)
    out = view_images(images, views, cfg)
    assert out.shape == (4, 4, *size, 3)
    np.testing.assert_array_equal(out, view_images(images, views, cfg))
    assert not np.array_equal(out[:, 1], images)


class _PoolingAutoencoder:
    """Stands in for an autoencoder: 2x2 average pooling, its calls counted."""
    fingerprint, channels, downsample = "pool2", 3, 2

    def __init__(self):
        self.encoded = 0

    def encode(self, images):
        self.encoded += len(images)
        n, h, w, c = images.shape
        return Posterior(images.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)), None)


def _latent_config(data_dir, name="flip_crop"):
    config = tiny_config(str(data_dir))
    config.data.update(resolution=16, augmentation=name, crop_views=2)
    config.latents.update(normalization="none", stats_examples=4)
    return config


def test_latent_cache_is_keyed_on_the_augmentation(tmp_path):
    autoencoder = _PoolingAutoencoder()
    directories = {latent_cache_dir(_latent_config(tmp_path, name), autoencoder) for name in ("none", "flip", "crop")}
    other_scale = _latent_config(tmp_path, "crop")
    other_scale.data.crop_min_scale = 0.5
    directories.add(latent_cache_dir(other_scale, autoencoder))
    assert len(directories) == 4
    unused = _latent_config(tmp_path, "none")
    unused.data.crop_views = 7  # read only by the crops
    assert latent_cache_dir(unused, autoencoder) == latent_cache_dir(_latent_config(tmp_path, "none"), autoencoder)


def test_latents_per_view_built_once_over_two_processes_equal_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(latent_cache, "SHARD_SIZE", 4)
    config = _latent_config(tmp_path / "two")
    images = _images(10)
    views = view_images(images, views_of(config.data), config.data)  # 6 views, 3 shards each
    two = LatentCache(config, _PoolingAutoencoder(), images)
    written = [two.build("train", views, process_index=p, process_count=2) for p in (0, 1)]
    assert written == [9, 9] and two.build("train", views, 0, 2) + two.build("train", views, 1, 2) == 0
    assert two.autoencoder.encoded == 4 + 10 * 6  # the statistics sample, then every view of every image once

    one = LatentCache(_latent_config(tmp_path / "one"), _PoolingAutoencoder(), images)
    latents = one.latents("train", views)
    assert latents.shape == (10, 6, 8, 8, 3)
    np.testing.assert_array_equal(two.read("train", views), latents)
    assert sorted(os.listdir(two.directory)) == sorted(os.listdir(one.directory))
    mirrored = _PoolingAutoencoder().encode(images[:, :, ::-1].astype(np.float32) / 127.5 - 1).mean
    np.testing.assert_allclose(latents[:, 1], mirrored, atol=1e-6)
    assert augmentation.settings(config.data) == {"augmentation": "flip_crop", "crop_views": 2, "crop_min_scale": 0.8}

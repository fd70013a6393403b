"""Augmentation views: the mirror with left and right swapped in its captions, deterministic crops, and
their latents and captions in each example's record, keyed on the augmentation and shared out over processes."""
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from t2ijax.data import augmentation, records, write_records
from t2ijax.data.augmentation import View, crop_boxes, swap_left_right, view_captions, view_images, views_of
from t2ijax.data.manifest import records_key
from t2ijax.data.pipeline import caption_tokens
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
    fingerprint, channels, downsample, own_factors = "pool2", 3, 2, (0.0, 1.0)

    def __init__(self):
        self.encoded = 0

    def encode(self, images):
        self.encoded += len(images)
        n, h, w, c = images.shape
        return Posterior(images.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)), None)


class _WordLengths:
    """Stands in for a text encoder: one token per word, its value the word's length."""
    hidden_size = 1

    def token_counts(self, texts):
        return np.asarray([len(text.split()) for text in texts])

    def encode(self, texts):
        words = [text.split() for text in texts]
        embeddings = np.zeros((len(texts), max(map(len, words)), 1), np.float32)
        for i, w in enumerate(words):
            embeddings[i, :len(w), 0] = [len(word) for word in w]
        return embeddings, embeddings[..., 0] > 0


def _latent_config(data_dir, name="flip_crop"):
    config = tiny_config(str(data_dir))
    config.data.update(resolution=16, augmentation=name, crop_views=2)
    config.latents.update(normalization="none", stats_examples=4)
    return config


def test_records_are_keyed_on_the_augmentation(tmp_path):
    keys = {records_key(_latent_config(tmp_path, name)) for name in ("none", "flip", "crop")}
    other_scale = _latent_config(tmp_path, "crop")
    other_scale.data.crop_min_scale = 0.5
    keys.add(records_key(other_scale))
    assert len(keys) == 4
    unused = _latent_config(tmp_path, "none")
    unused.data.crop_views = 7  # read only by the crops
    assert records_key(unused) == records_key(_latent_config(tmp_path, "none"))
    assert augmentation.settings(other_scale.data) == {"augmentation": "crop", "crop_views": 2, "crop_min_scale": 0.5}


class _InMemory:
    """An example set (t2ijax/data/sources.py ExampleSet) of arrays in memory."""

    def __init__(self, arrays):
        self.arrays, self.count = arrays, len(arrays["image"])

    def read(self, start, stop):
        return {k: v[start:stop] for k, v in self.arrays.items()}


def _records(config, images, captions, directory, process_counts):
    """The records of `images` written by 1 or more processes (each a call, in turn), with the stand-ins for
    the encoders; returns (the records, the autoencoder's calls, the shards each call wrote)."""
    encoders = write_records.Encoders(config)
    space = write_records.latent_space(encoders.autoencoder, write_records.latent_statistics(encoders, images))
    group = {"image": images, "caption_long": captions, "caption_short": np.full(len(images), "a shape", object)}
    name = "train/16/16x16"
    examples = write_records.train_examples(encoders, _InMemory(group), space, name, (16, 16), 16, keep_images=False)
    writer = write_records.SetWriter(str(directory), name, len(images), per_shard=4)
    written = [writer.write(examples, p, process_counts) for p in range(process_counts)]
    written.append(sum(writer.write(examples, p, process_counts) for p in range(process_counts)))  # a rerun
    return records.RecordSet(writer.directory, writer.shards()).read(range(len(images))), encoders, written


def test_records_of_every_view_written_once_over_two_processes_equal_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(write_records, "load_autoencoder", lambda name: _PoolingAutoencoder())
    monkeypatch.setattr("t2ijax.models.text.text_encoder_from_config", lambda *args: _WordLengths())
    config = _latent_config(tmp_path)
    config.data.captions = (("caption_long", 0.8), ("caption_short", 0.2))
    config.autoencoder.name = "pool2"  # any name but pixel space's: load_autoencoder makes the stand-in
    images = _images(10)
    captions = np.array([f"a circle on the left {'and' * i}" for i in range(10)], object)
    two, encoders, written = _records(config, images, captions, tmp_path / "two", 2)
    assert written == [2, 1, 0]  # 3 shards of 4 examples: shard s by process s % 2; the rerun writes none
    assert encoders.autoencoder.encoded == 4 + 10 * 6  # the statistics sample, then every view of every image once
    one, _, _ = _records(config, images, captions, tmp_path / "one", 1)
    for a, b in zip(two, one, strict=True):
        assert a.keys() == b.keys() == {"key", "text", "text_lengths", "caption", "caption_weights", "latent"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    latents = np.stack([r["latent"] for r in one])
    assert latents.shape == (10, 6, 8, 8, 3) and latents.dtype == records.dtype_named("bfloat16")
    mirrored = _PoolingAutoencoder().encode(images[:, :, ::-1].astype(np.float32) / 127.5 - 1).mean
    np.testing.assert_allclose(latents[:, 1].astype(np.float32), mirrored, atol=1e-2)  # bfloat16's precision
    for record, caption in zip(one, captions):
        expected = {False: caption, True: swap_left_right(caption)}
        for view, (long, short) in zip(views_of(config.data), record["caption"], strict=True):
            # Each view's caption in each field, its tokens stored once: the mirror reads "right".
            np.testing.assert_array_equal(caption_tokens(record, int(long))[:, 0],
                                          [len(w) for w in expected[view.flipped].split()])
            np.testing.assert_array_equal(caption_tokens(record, int(short))[:, 0], [1, 5])
        assert len(record["text_lengths"]) == 3  # the caption, its mirror, "a shape"
        np.testing.assert_allclose(record["caption_weights"], [0.8, 0.2])

"""A locally trained autoencoder, the latent cache and its normalizations, and the checks around them."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from configs.ablations import latent_normalization
from configs.ablations import latent_space as latent_space_axis
from conftest import tiny_config
from t2ijax.config import validate
from t2ijax.data import latent_cache
from t2ijax.data.prepare import latent_space, prepare
from t2ijax.data.sources import load_split
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import load_autoencoder
from t2ijax.models.autoencoders.inputs import check_images
from t2ijax.models.autoencoders.training import train_autoencoder
from t2ijax.training.loop import Run, check_resumable


def _latent_config(data_dir: str, autoencoder: str, **latents):
    c = tiny_config(data_dir)
    c.autoencoder.name = autoencoder
    c.latents.update(stats_examples=128, encode_batch_size=64, **latents)
    c.model.patch_size = 2  # 32 px / 2 (downsampling) / 2 = 8 x 8 tokens
    return c


def test_trained_autoencoder_is_a_diffusers_autoencoder_kl(trained, data_dir):
    result, c, workdir = trained
    assert np.isfinite(result["psnr"]) and result["steps"] == 3
    with open(os.path.join(workdir, "reconstruction.json")) as f:
        assert json.load(f)["psnr"] == result["psnr"]
    ours = load_autoencoder(result["autoencoder"])
    reference = AutoencoderKL.from_pretrained(result["autoencoder"]).eval()
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        dist = reference.encode(torch.from_numpy(images).permute(0, 3, 1, 2)).latent_dist
        decoded = reference.decode(dist.mean).sample.permute(0, 2, 3, 1).numpy()
    posterior = ours.encode(images)
    np.testing.assert_allclose(np.asarray(posterior.mean), dist.mean.permute(0, 2, 3, 1).numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(ours.decode(posterior.mean)), decoded, atol=1e-4)
    # Its own factors standardise its latents over the statistics sample, as SD's scaling_factor does.
    train_images = load_split(c.data, "train")["image"][:128]
    z = np.asarray(ours.encode(train_images.astype(np.float32) / 127.5 - 1).mode())
    assert reference.config.shift_factor == pytest.approx(float(z.mean()), abs=1e-4)
    assert reference.config.scaling_factor == pytest.approx(float(1 / z.std()), rel=1e-3)
    with pytest.raises(ConfigError, match="exists; it is kept"):
        train_autoencoder(c, workdir)


def test_latent_cache_holds_normalized_latents_and_resumes(trained, data_dir, monkeypatch):
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization="channel_stats")
    # Built from nothing in shards of 96, whatever other tests of this session's autoencoder cached before.
    shutil.rmtree(latent_cache.latent_cache_dir(config, prepare(config).space.autoencoder))
    monkeypatch.setattr(latent_cache, "SHARD_SIZE", 96)
    data = prepare(config)
    (train,) = data.train.values()
    assert "image" not in train and train["latent"].shape == (256, 1, 16, 16, 2)  # one view: no augmentation
    assert data.validation["latent"].shape == (64, 16, 16, 2)
    directory = latent_cache.latent_cache_dir(config, data.space.autoencoder)
    with open(os.path.join(directory, "meta.json")) as f:
        meta = json.load(f)
    assert meta["normalization"] == "channel_stats" and meta["autoencoder_name"] == config.autoencoder.name
    np.testing.assert_allclose(meta["after"]["mean"], 0.0, atol=1e-3)
    np.testing.assert_allclose(meta["after"]["std"], 1.0, atol=1e-3)
    assert max(abs(m) for m in meta["before"]["mean"]) > 1e-2 or max(abs(s - 1) for s in meta["before"]["std"]) > 1e-2
    first = data.space.normalize(np.asarray(data.space.autoencoder.encode(
        load_split(config.data, "train")["image"][:4].astype(np.float32) / 127.5 - 1).mode()))
    np.testing.assert_allclose(train["latent"][:4, 0], first, atol=1e-5)

    shards = sorted(f for f in os.listdir(directory) if f.startswith("train-"))
    assert len(shards) == 3  # 256 examples in shards of 96
    kept = os.path.getmtime(os.path.join(directory, shards[0]))
    os.remove(os.path.join(directory, shards[1]))  # an interrupted build
    again = prepare(config)
    np.testing.assert_array_equal(again.train[(32, 32)]["latent"], train["latent"])
    assert os.path.getmtime(os.path.join(directory, shards[0])) == kept


def test_latents_are_cached_per_bucket(trained, data_dir):
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization="channel_stats")
    config.resolution.buckets, config.data.aspect_ratios = True, (0.5, 1.0, 2.0)
    data = prepare(config)
    directory = latent_cache.latent_cache_dir(config, data.space.autoencoder)
    assert sorted(data.train) == [(24, 44), (32, 32), (44, 24)]
    for (height, width), group in data.train.items():
        assert group["latent"].shape[1:] == (1, height // 2, width // 2, 2) and len(group["caption"]) == len(group["latent"])
        name = "train" if height == width else f"train-{height}x{width}"
        assert f"{name}-00000.npy" in os.listdir(directory)
    assert sum(len(g["latent"]) for g in data.train.values()) == 256


@pytest.mark.parametrize("normalization", ["none", "config_factors", "global_stats"])
def test_normalizations(trained, data_dir, normalization):
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization=normalization)
    space, cache = latent_space(config, load_split(config.data, "train")["image"])
    ae = space.autoencoder
    expected = {"none": (0.0, 1.0), "config_factors": (ae.own_factors[0], ae.own_factors[1])}
    if normalization in expected:
        offset, scale = expected[normalization]
        np.testing.assert_allclose(space.offset, np.broadcast_to(offset, space.offset.shape))
        np.testing.assert_allclose(space.scale, np.broadcast_to(scale, space.scale.shape))
    else:
        with open(os.path.join(cache.directory, "meta.json")) as f:
            after = json.load(f)["after"]
        assert len(set(np.asarray(space.scale).ravel().tolist())) == 1
        assert abs(np.mean(after["mean"])) < 0.5
    z = np.random.default_rng(0).standard_normal((2, 16, 16, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(space.decode(space.normalize(z))), np.asarray(ae.decode(z)), atol=1e-5)


def test_cache_built_with_other_settings_is_refused(trained, data_dir):
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization="channel_stats")
    directory = latent_cache.latent_cache_dir(config, load_autoencoder(config.autoencoder.name))
    prepare(config)
    meta_path = os.path.join(directory, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["normalization"] = "global_stats"
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(ConfigError, match="was built with normalization='global_stats', the config asks "
                                          "'channel_stats'; remove that directory"):
        latent_space(config)


def test_resuming_a_run_with_another_latent_space_is_refused(trained, data_dir, tmp_path):
    pixel = tiny_config(data_dir)
    (tmp_path / "checkpoints" / "3").mkdir(parents=True)
    (tmp_path / "config.json").write_text(pixel.to_json())
    check_resumable(str(tmp_path), pixel)
    latent = _latent_config(data_dir, trained[0]["autoencoder"])
    with pytest.raises(ConfigError, match="holds checkpoints of another config .*autoencoder.name: run has 'identity', "
                                          "you passed '.*'; .*or pass another --workdir"):
        check_resumable(str(tmp_path), latent)


def test_bad_images_and_latent_shapes_fail_in_one_line(trained, data_dir):
    images = np.zeros((2, 32, 32, 3), np.float32)
    check_images(images, 2)
    with pytest.raises(ConfigError, match="looks NCHW, transpose to NHWC"):
        check_images(images.transpose(0, 3, 1, 2), 2)
    with pytest.raises(ConfigError, match=r"values in \[0, 255\] \(uint8\); convert uint8 pixels with x / 127.5 - 1"):
        check_images(np.full((1, 32, 32, 3), 255, np.uint8) * (np.arange(3) > 0), 2)
    with pytest.raises(ConfigError, match="multiples of the autoencoder's downsampling 4"):
        check_images(np.zeros((1, 30, 30, 3), np.float32), 4)
    ae = load_autoencoder(trained[0]["autoencoder"])
    with pytest.raises(ConfigError, match=r"values in \[0, 255\]"):
        ae.encode(np.full((1, 32, 32, 3), 255.0, np.float32) * (np.arange(3) > 0))

    config = _latent_config(data_dir, trained[0]["autoencoder"])
    config.model.patch_size = 32  # divides the 32 px images, not their 16 latent pixels
    with pytest.raises(ConfigError, match="= 16 latent pixels, not a multiple of config.model.patch_size=32"):
        validate(config, num_devices=1)
    pixel = tiny_config(data_dir)
    pixel.latents.normalization = "channel_stats"
    with pytest.raises(ConfigError, match="needs an autoencoder's latents"):
        validate(pixel, num_devices=1)
    space, _ = latent_space(_latent_config(data_dir, trained[0]["autoencoder"]),
                            load_split(config.data, "train")["image"])
    with pytest.raises(ConfigError, match="latents have 3 channels, the autoencoder takes 2"):
        space.decode(np.zeros((1, 16, 16, 3), np.float32))


def test_training_and_generation_in_latent_space(trained, data_dir, tmp_path):
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization="channel_stats", posterior="sample")
    run = Run(config, str(tmp_path)).setup()
    assert run.image_shape == (16, 16, 2)
    with jax.set_mesh(run.mesh):
        state, metrics = run.train_step(run.state, run.device_batch(0))
    assert np.isfinite(float(metrics["loss"]))
    images = run.generator(state.sampling_params, run.data.prompts["text"][:2], run.data.prompts["text_mask"][:2])
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8


@pytest.mark.parametrize("axis", [latent_normalization, latent_space_axis])
def test_latent_ablation_variants_validate(trained, data_dir, axis):
    for variant in axis.VARIANTS:
        config = axis.get_config(variant)
        if config.autoencoder.name != "identity":
            assert config.autoencoder.name == latent_normalization.SHAPES_AUTOENCODER
            config.autoencoder.name = trained[0]["autoencoder"]
        validate(config, num_devices=1)


def test_pixel_space_inputs_are_exactly_the_scaled_images(data_dir):
    space, cache = latent_space(tiny_config(data_dir))
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert cache is None and (space.channels, space.downsample) == (3, 1)
    np.testing.assert_array_equal(space.images_to_latents(images), images.astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_array_equal(space.decode(images.astype(np.float32)), images.astype(np.float32))

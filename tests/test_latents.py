"""A locally trained autoencoder, the latents in the records and their normalizations, and the checks around them."""
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
from t2ijax.data import manifest, pipeline, records, write_records
from t2ijax.data.run_data import run_space
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


def latent_space(config, images):
    """The latent space preprocessing estimates for `config` on `images`, and its statistics."""
    encoders = write_records.Encoders(config)
    statistics = write_records.latent_statistics(encoders, images)
    return write_records.latent_space(encoders.autoencoder, statistics), statistics


@pytest.fixture(scope="module")
def written(trained, data_dir, tmp_path_factory):
    """(config, directory, manifest): channel_stats records of the trained autoencoder, in shards of 96."""
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization="channel_stats")
    config.data.update(records=str(tmp_path_factory.mktemp("records")), records_per_shard=96)
    return config, *write_records.write(config)


def test_records_hold_normalized_latents(written):
    config, directory, found = written
    assert found["made_with"]["latents.normalization"] == "channel_stats"
    assert found["made_with"]["autoencoder.name"] == config.autoencoder.name
    statistics = found["latents"]["32"]
    np.testing.assert_allclose(statistics["after"]["mean"], 0.0, atol=1e-3)
    np.testing.assert_allclose(statistics["after"]["std"], 1.0, atol=1e-3)
    before = statistics["before"]
    assert max(abs(m) for m in before["mean"]) > 1e-2 or max(abs(s - 1) for s in before["std"]) > 1e-2
    train = pipeline.read_set(directory, found, "train/32/32x32")
    assert len(train) == 256 and "image" not in train[0]  # no technique compares with pixels: latents only
    assert train[0]["latent"].shape == (1, 16, 16, 2) and train[0]["latent"].dtype == records.dtype_named("bfloat16")
    (validation,) = pipeline.read_set(directory, found, "validation/32/32x32", count=1)
    assert validation["latent"].shape == (16, 16, 2)
    # The autoencoder's own encoding at the manifest's offset and scale, to bfloat16's precision.
    space = write_records.latent_space(load_autoencoder(config.autoencoder.name), statistics)
    first = space.normalize(np.asarray(space.autoencoder.encode(
        load_split(config.data, "train")["image"][:4].astype(np.float32) / 127.5 - 1).mode()))
    stored = np.stack([r["latent"][0] for r in train[:4]]).astype(np.float32)
    np.testing.assert_allclose(stored, first, rtol=1 / 128, atol=1e-2)


def test_killed_preprocessing_resumes_with_the_missing_shards_only(written, tmp_path):
    config, directory, found = written
    assert [count for _, count in found["sets"]["train/32/32x32"]["shards"]] == [96, 96, 64]
    killed = tmp_path / "records"
    shutil.copytree(directory, killed)
    train = killed / "train" / "32" / "32x32"
    shards = sorted(os.listdir(train))
    kept = os.stat(train / shards[0]).st_mtime_ns
    os.remove(train / shards[1])  # killed before its last shard and the manifest
    os.remove(killed / manifest.MANIFEST)
    config = config.copy_and_resolve_references()
    config.data.records = str(killed)
    _, again = write_records.write(config)
    assert sorted(os.listdir(train)) == shards and os.stat(train / shards[0]).st_mtime_ns == kept
    assert again["sets"] == found["sets"] and again["latents"] == found["latents"]
    for old, new in zip(pipeline.read_set(directory, found, "train/32/32x32"),
                        pipeline.read_set(str(killed), again, "train/32/32x32"), strict=True):
        assert old.keys() == new.keys()
        for key in old:
            np.testing.assert_array_equal(old[key], new[key], err_msg=key)


def test_latents_are_written_per_bucket(trained, data_dir):
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization="channel_stats")
    config.resolution.buckets, config.data.aspect_ratios = True, (0.5, 1.0, 2.0)
    directory, found = write_records.write(config)
    train = {name: s["count"] for name, s in found["sets"].items() if name.startswith("train/")}
    assert sorted(train) == ["train/32/24x44", "train/32/32x32", "train/32/44x24"] and sum(train.values()) == 256
    for name in train:
        height, width = map(int, name.rsplit("/", 1)[1].split("x"))
        (record,) = pipeline.read_set(directory, found, name, count=1)
        assert record["latent"].shape == (1, height // 2, width // 2, 2)


@pytest.mark.parametrize("normalization", ["none", "config_factors", "global_stats"])
def test_normalizations(trained, data_dir, normalization):
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization=normalization)
    space, statistics = latent_space(config, load_split(config.data, "train")["image"])
    ae = space.autoencoder
    expected = {"none": (0.0, 1.0), "config_factors": (ae.own_factors[0], ae.own_factors[1])}
    if normalization in expected:
        offset, scale = expected[normalization]
        np.testing.assert_allclose(space.offset, np.broadcast_to(offset, space.offset.shape))
        np.testing.assert_allclose(space.scale, np.broadcast_to(scale, space.scale.shape))
    else:
        assert len(set(np.asarray(space.scale).ravel().tolist())) == 1
        assert abs(np.mean(statistics["after"]["mean"])) < 0.5
    z = np.random.default_rng(0).standard_normal((2, 16, 16, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(space.decode(space.normalize(z))), np.asarray(ae.decode(z)), atol=1e-5)


def test_records_made_with_other_settings_are_refused(written):
    config, directory, _ = written
    other = _latent_config(config.data.data_dir, config.autoencoder.name, normalization="global_stats")
    other.data.records = directory
    with pytest.raises(ConfigError, match=r"records at .* were made with latents.normalization='channel_stats', "
                                          r"the config asks 'global_stats'; run `python -m t2ijax.preprocess`"):
        manifest.load_checked(other)
    with pytest.raises(ConfigError, match="latents.normalization='channel_stats', the config asks 'global_stats'"):
        write_records.write(other)  # nor are they added to


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
                            load_split(config.data, "train")["image"][:128])
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


def test_pixel_space_inputs_are_exactly_the_scaled_images(tmp_path):
    space = run_space(tiny_config(str(tmp_path)))  # pixel space needs no records
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert (space.channels, space.downsample) == (3, 1) and not os.listdir(tmp_path)
    np.testing.assert_array_equal(space.images_to_latents(images), images.astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_array_equal(space.decode(images.astype(np.float32)), images.astype(np.float32))

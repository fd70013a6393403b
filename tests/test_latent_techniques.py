"""REPA, P-DINO and LPIPS in latent space (PRX's recipe: REPA on autoencoder latents): the training images
stay next to the latents when a technique compares with real pixels, and only then; each image is the one
its latents were encoded from (view, bucket, phase); each technique trains to a checkpoint."""
import os

import jax
import numpy as np
import pytest
import safetensors.numpy

from t2ijax.data import buckets, pipeline, write_records
from t2ijax.data.run_data import training_sets
from t2ijax.models.autoencoders import load_autoencoder
from t2ijax.models.vision.lpips import VGG16_SLICES
from t2ijax.training import phases
from t2ijax.training.loop import Run
from test_latents import _latent_config
from test_techniques_train import apply


@pytest.fixture(scope="module")
def lpips_weights(tmp_path_factory) -> str:
    """Random LPIPS weights named as the `lpips` package names them: the mechanics need LPIPS, not a good one."""
    rng, tensors, channels = np.random.default_rng(0), {}, 3
    for tap, (slice_index, convs, width) in enumerate(VGG16_SLICES):
        for index in convs:
            fan_in = channels * 9
            tensors[f"net.slice{slice_index}.{index}.weight"] = (
                rng.standard_normal((width, channels, 3, 3)) * np.sqrt(2 / fan_in)).astype(np.float32)
            tensors[f"net.slice{slice_index}.{index}.bias"] = np.zeros(width, np.float32)
            channels = width
        tensors[f"lin{tap}.model.1.weight"] = rng.uniform(0, 1, (1, width, 1, 1)).astype(np.float32)  # heads >= 0
    path = str(tmp_path_factory.mktemp("lpips") / "lpips_vgg.safetensors")
    safetensors.numpy.save_file(tensors, path)
    return path


def technique(name: str, teacher_dir: str, lpips_path: str) -> dict:
    dino = {"teacher.name": "dinov2", "teacher.path": teacher_dir}
    return {"repa": {"repa.weight": 0.5, "repa.layer": 0, **dino},
            "pdino": {"perceptual.dino_weight": 0.1, **dino},
            "lpips": {"perceptual.lpips_weight": 0.1, "perceptual.lpips_weights": lpips_path}}[name]


def _encoded_to_bfloat16(space, images: np.ndarray, latents: np.ndarray) -> None:
    """`images` encode to the stored `latents` (bfloat16: its 8 bits of precision)."""
    np.testing.assert_allclose(latents.astype(np.float32), space.images_to_latents(images), rtol=1 / 128, atol=1e-2)


def test_images_stay_beside_the_latents_of_their_view_bucket_and_phase_only_when_needed(trained, data_dir, teacher):
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization="channel_stats")
    config.resolution.buckets, config.data.aspect_ratios = True, (0.5, 1.0)
    config.data.augmentation = "flip"
    config.resolution.phases = ((16, 8, 1, config.optim.learning_rate), (32, 8, 5, config.optim.learning_rate))
    directory, found = write_records.write(config)
    train_sets = [name for name in found["sets"] if name.startswith("train/")]
    assert len(train_sets) == 4 and not any(  # no technique: latents only
        "image" in pipeline.read_set(directory, found, name, count=1)[0] for name in train_sets)

    apply(config, technique("repa", teacher, ""))
    directory, found = write_records.write(config)
    autoencoder = load_autoencoder(config.autoencoder.name)
    for phase in phases.phases(config):
        phase_config = phases.phase_config(config, phase)
        space = write_records.latent_space(autoencoder, found["latents"][str(phase.resolution)])
        names, _ = training_sets(found, phase.resolution, buckets.grid(phase_config), phase.global_batch_size)
        assert len(names) == 2  # buckets
        for name in names:
            for record in pipeline.read_set(directory, found, name, count=4):
                assert len(record["image"]) == record["latent"].shape[0] == 2  # views
                for view, latent in zip(record["image"], record["latent"]):
                    _encoded_to_bfloat16(space, pipeline.decode_png(view)[None], latent[None])
        batches = pipeline.phase_batches(phase_config, directory, found, names, phase.global_batch_size, 0, 0, 1)
        batch = batches(0)
        _encoded_to_bfloat16(space, batch["image"], batch["latent"])


@pytest.mark.parametrize("name", ["repa", "pdino", "lpips"])
def test_each_technique_trains_to_a_checkpoint_in_latent_space(trained, data_dir, teacher, lpips_weights, name,
                                                               tmp_path):
    config = _latent_config(data_dir, trained[0]["autoencoder"], normalization="channel_stats")
    apply(config, technique(name, teacher, lpips_weights))
    config.total_steps = config.checkpoint.every_steps = config.log.every_steps = 2
    config.data.global_batch_size = 4  # LPIPS's VGG16 is most of the step
    run = Run(config, str(tmp_path)).setup()
    with jax.set_mesh(run.mesh):
        run.state, metrics = run.train_step(run.state, run.device_batch(0))
    assert np.isfinite(float(metrics[f"loss_{name}"])) and float(metrics[f"loss_{name}"]) != 0
    outputs = run.train()  # the second step, the checkpoint, the final samples and evaluation
    assert os.listdir(outputs["checkpoints"]) == ["2"]

"""Teachers: patch features on a requested grid against transformers / diffusers run on the same
preprocessing in torch, their gradients, and the config errors."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from diffusers import AutoencoderKL

from configs import shapes_tiny
from conftest import saved_randomized
from t2ijax.config import validate
from t2ijax.errors import ConfigError
from t2ijax.models.vision.dinov2 import MEAN, STD
from t2ijax.techniques.teachers import check_teacher, load_teacher

TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=7, image_size=28)
AUTOENCODER = dict(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4, layers_per_block=1,
                   down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)


def _teacher_config(name, path):
    return ml_collections.ConfigDict({"teacher": {"name": name, "path": str(path)}})


def _pixels(size=32, n=2):
    return np.random.default_rng(size).uniform(-1.1, 1.1, (n, size, size, 3)).astype(np.float32)


def _nchw(pixels):
    return torch.from_numpy(pixels).permute(0, 3, 1, 2)


def _vit_reference(model, pixels, grid, num_prefix):
    """DINO preprocessing in torch: [0, 1], bicubic (antialiased when shrinking) to grid x patch, ImageNet mean/std."""
    size = tuple(g * model.config.patch_size for g in grid)
    x = ((_nchw(pixels) + 1) / 2).clamp(0, 1)
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=size[0] < pixels.shape[1])
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    with torch.no_grad():
        tokens = model(pixel_values=x).last_hidden_state[:, num_prefix:]
    return tokens.reshape(len(pixels), *grid, -1).numpy()


@pytest.mark.parametrize("name, grid", [("dinov2", (3, 2)), ("dinov3", (6, 5))])  # shrink 32 px, grow it
def test_vit_teachers_match_transformers_at_the_requested_grid(tmp_path, name, grid):
    if name == "dinov2":
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=2, **TOWER)
        reference = saved_randomized(transformers.Dinov2WithRegistersModel(config), tmp_path)
    else:
        config = transformers.DINOv3ViTConfig(intermediate_size=48, num_register_tokens=2, **TOWER)
        reference = saved_randomized(transformers.DINOv3ViTModel(config), tmp_path)
    teacher, params = load_teacher(_teacher_config(name, tmp_path))
    pixels = _pixels()
    got = jax.jit(teacher.features, static_argnums=2)(params, pixels, grid)
    assert got.shape == (2, *grid, teacher.dim) and teacher.dim == 32 and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), _vit_reference(reference, pixels, grid, 3), atol=1e-5, rtol=1e-5)


def test_autoencoder_teacher_is_the_pooled_map_before_the_latent_projection(tmp_path):
    vae = saved_randomized(AutoencoderKL(**AUTOENCODER), tmp_path)
    teacher, params = load_teacher(_teacher_config("autoencoder", tmp_path))
    pixels = _pixels(16)
    encoder = vae.encoder
    with torch.no_grad():
        x = encoder.conv_in(_nchw(pixels))
        for block in encoder.down_blocks:
            x = block(x)
        x = encoder.conv_act(encoder.conv_norm_out(encoder.mid_block(x)))  # 8x8, before conv_out
        expected = F.avg_pool2d(x, 2).permute(0, 2, 3, 1).numpy()
    got = jax.jit(teacher.features, static_argnums=2)(params, pixels, (4, 4))
    assert teacher.dim == 16 and got.shape == (2, 4, 4, 16)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="8x8 feature map cannot be pooled to the 3x3 grid"):
        jax.eval_shape(lambda p, x: teacher.features(p, x, (3, 3)), params, pixels)


def test_gradients_reach_the_pixels_never_the_params(tmp_path):
    saved_randomized(AutoencoderKL(**AUTOENCODER), tmp_path)
    teacher, params = load_teacher(_teacher_config("autoencoder", tmp_path))
    grads = jax.jit(jax.grad(lambda p, x: teacher.features(p, x, (8, 8)).sum(), argnums=(0, 1)))(params, _pixels(16))
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads[0]))
    assert np.all(np.isfinite(grads[1])) and np.any(np.asarray(grads[1]))


def _write_config(directory, **config):
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_check_teacher_errors(tmp_path):
    autoencoder = _write_config(tmp_path / "ae", _class_name="AutoencoderKL", block_out_channels=[8, 16, 32])
    dc = _write_config(tmp_path / "dc", _class_name="AutoencoderDC")
    dino = _write_config(tmp_path / "dino", model_type="dinov2")
    pdino = {"config.perceptual.dino_weight": (16, 16)}
    cases = [
        ("none", "", pdino, "config.perceptual.dino_weight needs a teacher and config.teacher.name='none'"),
        ("none", dino, {}, "config.teacher.path='.*' is set but config.teacher.name='none'"),
        ("dinov2", "", pdino, "config.teacher.name='dinov2' needs config.teacher.path"),
        ("dinov3", tmp_path / "nowhere", pdino, "is not a directory with config.json"),
        ("dinov3", dino, pdino, "holds a 'dinov2' model; config.teacher.name='dinov3' reads dinov3_vit"),
        ("autoencoder", dc, pdino, "is a 'AutoencoderDC'; the autoencoder teacher reads AutoencoderKL"),
        ("autoencoder", autoencoder, pdino, r"asks the autoencoder teacher for a 16x16 grid, but its feature map is 8x8"),
    ]
    for name, path, uses, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            check_teacher(ml_collections.ConfigDict({"name": name, "path": str(path)}), 32, uses)
        assert "\n" not in str(error.value)
    check_teacher(ml_collections.ConfigDict({"name": "autoencoder", "path": str(autoencoder)}), 32,
                  {"config.perceptual.dino_weight": (4, 4)})
    check_teacher(ml_collections.ConfigDict({"name": "dinov2", "path": "facebook/dinov2-base"}), 32, pdino)
    with pytest.raises(ConfigError, match="there is no teacher to load"):
        load_teacher(_teacher_config("none", ""))


def test_validate_checks_the_teacher_p_dino_uses(tmp_path):
    """P-DINO on the 16x16 token grid of 32 px images in patches of 2, with an autoencoder teacher whose map is 8x8."""
    c = shapes_tiny.get_config()
    c.model.patch_size = 2
    c.perceptual.dino_weight = 0.5
    with pytest.raises(ConfigError, match="config.perceptual.dino_weight needs a teacher"):
        validate(c, num_devices=1)
    c.teacher.update(name="autoencoder", path=str(_write_config(
        tmp_path / "ae", _class_name="AutoencoderKL", block_out_channels=[8, 16, 32])))
    with pytest.raises(ConfigError, match="16x16 grid"):
        validate(c, num_devices=1)
    c.perceptual.dino_grid = 4
    validate(c, num_devices=1)

"""The CLIP image tower, DINOv2 (with and without registers) and DINOv3 against transformers,
read from directories that transformers itself saved."""
import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from conftest import saved_randomized
from t2ijax.errors import ConfigError
from t2ijax.models.vision.clip import load_clip_vision
from t2ijax.models.vision.dinov2 import Dinov2Config, load_dinov2
from t2ijax.models.vision.dinov3 import Dinov3Config, load_dinov3

TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=7)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=99,
            bos_token_id=0, eos_token_id=1, pad_token_id=1)


def _pixels(n, size):
    return np.random.default_rng(size).normal(size=(n, size, size, 3)).astype(np.float32)


def _torch_input(pixels):
    return torch.from_numpy(pixels).permute(0, 3, 1, 2)


def test_clip_vision_tower_matches_transformers(tmp_path):
    config = transformers.CLIPVisionConfig(intermediate_size=64, image_size=28, projection_dim=16, **TOWER)
    reference = saved_randomized(transformers.CLIPVisionModelWithProjection(config), tmp_path)
    module, params = load_clip_vision(tmp_path)
    pixels = _pixels(3, 28)
    with torch.no_grad():
        expected = reference(pixel_values=_torch_input(pixels)).image_embeds.numpy()
    got = np.asarray(jax.jit(module.apply)({"params": params}, pixels))
    assert got.shape == (3, 16)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_clip_full_model_directory_reads_the_vision_tower(tmp_path):
    config = transformers.CLIPConfig(vision_config=dict(intermediate_size=64, image_size=28, **TOWER),
                                     text_config=TEXT, projection_dim=16)
    reference = saved_randomized(transformers.CLIPModel(config), tmp_path)
    module, params = load_clip_vision(tmp_path)
    pixels = _pixels(2, 28)
    with torch.no_grad():
        expected = reference.get_image_features(pixel_values=_torch_input(pixels))
    expected = getattr(expected, "pooler_output", expected).numpy()
    got = np.asarray(module.apply({"params": params}, pixels))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def _assert_class_and_patches_match(module, params, reference, pixels, num_prefix):
    """`encode` against transformers' last_hidden_state: class token and the patch grid after the prefix."""
    with torch.no_grad():
        expected = reference(pixel_values=_torch_input(pixels)).last_hidden_state.numpy()
    class_token, patches = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode"))(params, pixels)
    batch, height, width = pixels.shape[0], *(side // module.config.patch_size for side in pixels.shape[1:3])
    assert patches.shape == (batch, height, width, module.config.encoder.hidden_size)
    np.testing.assert_allclose(np.asarray(class_token), expected[:, 0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(patches).reshape(batch, height * width, -1), expected[:, num_prefix:],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("registers, size", [(0, 28), (0, 42), (4, 28), (4, 21)])  # grid as saved, up, down
def test_dinov2_matches_transformers(tmp_path, registers, size):
    kwargs = dict(image_size=28, **TOWER)
    if registers:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kwargs)
        reference = saved_randomized(transformers.Dinov2WithRegistersModel(config), tmp_path)
    else:
        reference = saved_randomized(transformers.Dinov2Model(transformers.Dinov2Config(**kwargs)), tmp_path)
    module, params = load_dinov2(tmp_path)
    pixels = _pixels(2, size)
    with torch.no_grad():
        expected = reference(pixel_values=_torch_input(pixels)).pooler_output.numpy()
    got = np.asarray(jax.jit(module.apply)({"params": params}, pixels))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    _assert_class_and_patches_match(module, params, reference, pixels, 1 + registers)


@pytest.mark.parametrize("registers, gated, height, width", [(0, False, 28, 28), (2, False, 42, 21), (4, True, 14, 35)])
def test_dinov3_matches_transformers(tmp_path, registers, gated, height, width):
    """Registers, SwiGLU, key/value biases off and on, and grids other than the saved one."""
    config = transformers.DINOv3ViTConfig(image_size=28, intermediate_size=48, num_register_tokens=registers,
                                          use_gated_mlp=gated, hidden_act="silu" if gated else "gelu",
                                          key_bias=gated, value_bias=not gated, **TOWER)
    reference = saved_randomized(transformers.DINOv3ViTModel(config), tmp_path)
    module, params = load_dinov3(tmp_path)
    pixels = np.random.default_rng(height).normal(size=(2, height, width, 3)).astype(np.float32)
    _assert_class_and_patches_match(module, params, reference, pixels, 1 + registers)


def test_missing_tensor_wrong_model_and_missing_directory_are_clear(tmp_path):
    config = transformers.Dinov2Config(image_size=28, **TOWER)
    saved_randomized(transformers.Dinov2Model(config), tmp_path)
    tensors = safetensors.numpy.load_file(tmp_path / "model.safetensors")
    del tensors["encoder.layer.1.mlp.fc2.weight"]
    safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
    for call, pattern in [(lambda: load_dinov2(tmp_path), r"encoder\.layer\.1\.mlp\.fc2\.weight"),
                          (lambda: Dinov2Config.from_dict({"model_type": "clip_vision_model"}),
                           "model_type 'clip_vision_model'"),
                          (lambda: Dinov3Config.from_dict({"model_type": "dinov3_convnext"}),
                           "model_type 'dinov3_convnext'"),
                          (lambda: load_dinov3(tmp_path), "model_type 'dinov2'"),
                          (lambda: load_clip_vision(tmp_path / "nowhere"), "nowhere")]:
        with pytest.raises(ConfigError, match=pattern) as error:
            call()
        assert "\n" not in str(error.value)

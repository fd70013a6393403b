"""The CLIP image tower and DINOv2 (with and without registers) against transformers, read
from directories that transformers itself saved."""
import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from t2ijax.errors import ConfigError
from t2ijax.models.vision.clip import load_clip_vision
from t2ijax.models.vision.dinov2 import Dinov2Config, load_dinov2

TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=7)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=99,
            bos_token_id=0, eos_token_id=1, pad_token_id=1)


def _saved(model, directory):
    """Random values everywhere (transformers initialises norms and layer scales to constants), saved."""
    torch.manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn_like(tensor) * 0.2)
    model.eval().save_pretrained(directory)
    return model


def _pixels(n, size):
    return np.random.default_rng(size).normal(size=(n, size, size, 3)).astype(np.float32)


def _torch_input(pixels):
    return torch.from_numpy(pixels).permute(0, 3, 1, 2)


def test_clip_vision_tower_matches_transformers(tmp_path):
    config = transformers.CLIPVisionConfig(intermediate_size=64, image_size=28, projection_dim=16, **TOWER)
    reference = _saved(transformers.CLIPVisionModelWithProjection(config), tmp_path)
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
    reference = _saved(transformers.CLIPModel(config), tmp_path)
    module, params = load_clip_vision(tmp_path)
    pixels = _pixels(2, 28)
    with torch.no_grad():
        expected = reference.get_image_features(pixel_values=_torch_input(pixels))
    expected = getattr(expected, "pooler_output", expected).numpy()
    got = np.asarray(module.apply({"params": params}, pixels))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("registers, size", [(0, 28), (0, 42), (4, 28), (4, 21)])  # grid as saved, up, down
def test_dinov2_matches_transformers(tmp_path, registers, size):
    kwargs = dict(image_size=28, **TOWER)
    if registers:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kwargs)
        reference = _saved(transformers.Dinov2WithRegistersModel(config), tmp_path)
    else:
        reference = _saved(transformers.Dinov2Model(transformers.Dinov2Config(**kwargs)), tmp_path)
    module, params = load_dinov2(tmp_path)
    pixels = _pixels(2, size)
    with torch.no_grad():
        expected = reference(pixel_values=_torch_input(pixels)).pooler_output.numpy()
    got = np.asarray(jax.jit(module.apply)({"params": params}, pixels))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_missing_tensor_wrong_model_and_missing_directory_are_clear(tmp_path):
    config = transformers.Dinov2Config(image_size=28, **TOWER)
    _saved(transformers.Dinov2Model(config), tmp_path)
    tensors = safetensors.numpy.load_file(tmp_path / "model.safetensors")
    del tensors["encoder.layer.1.mlp.fc2.weight"]
    safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
    for call, pattern in [(lambda: load_dinov2(tmp_path), r"encoder\.layer\.1\.mlp\.fc2\.weight"),
                          (lambda: Dinov2Config.from_dict({"model_type": "clip_vision_model"}),
                           "model_type 'clip_vision_model'"),
                          (lambda: load_clip_vision(tmp_path / "nowhere"), "nowhere")]:
        with pytest.raises(ConfigError, match=pattern) as error:
            call()
        assert "\n" not in str(error.value)

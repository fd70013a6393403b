"""Parity of the Flax autoencoder ports with diffusers (tiny random models built here, float32)."""
import numpy as np
import pytest
import torch
from diffusers import AutoencoderDC, AutoencoderKL, AutoencoderKLFlux2

from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import load_autoencoder

TOL = 1e-4


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Norm scales, biases and BatchNorm statistics away from their 1/0 initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if tensor.ndim == 1 and tensor.is_floating_point():
                noise = 0.2 * torch.randn(tensor.shape, generator=g)
                tensor.copy_(tensor.abs() + noise.abs() if "running_var" in name else tensor + noise)
    return model.eval()


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(0, 2, 3, 1).numpy()


def _check_parity(reference, tmp_path, images: np.ndarray, deterministic: bool):
    reference.save_pretrained(tmp_path)
    ours = load_autoencoder(str(tmp_path))
    posterior = ours.encode(images)
    with torch.no_grad():
        encoded = reference.encode(_torch(images))
        if deterministic:
            mean = _numpy(encoded.latent)
        else:
            dist = encoded.latent_dist
            mean = _numpy(dist.mean)
            np.testing.assert_allclose(np.asarray(posterior.logvar), _numpy(dist.logvar), atol=TOL, rtol=0)
        decoded = _numpy(reference.decode(torch.from_numpy(mean).permute(0, 3, 1, 2)).sample)
    np.testing.assert_allclose(np.asarray(posterior.mean), mean, atol=TOL, rtol=0)
    assert deterministic == (posterior.logvar is None)
    np.testing.assert_allclose(np.asarray(ours.decode(posterior.mean)), decoded, atol=TOL, rtol=0)
    assert ours.channels == mean.shape[-1] and images.shape[1] // ours.downsample == mean.shape[1]
    return ours


@pytest.mark.parametrize("extra", [{}, dict(use_quant_conv=False, use_post_quant_conv=False,
                                            mid_block_add_attention=False, shift_factor=0.1)])
def test_autoencoder_kl_matches_diffusers(tmp_path, extra):
    torch.manual_seed(0)
    reference = _randomize(AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4, latent_channels=4,
        scaling_factor=0.5, **extra), seed=1)
    ours = _check_parity(reference, tmp_path, _images(2, 16), deterministic=False)
    offset, scale = ours.own_factors
    np.testing.assert_allclose(scale, 0.5)
    np.testing.assert_allclose(offset, extra.get("shift_factor", 0.0))


def test_flux2_autoencoder_and_its_batchnorm_latent_normalization(tmp_path):
    torch.manual_seed(0)
    reference = _randomize(AutoencoderKLFlux2(
        block_out_channels=(8, 16), decoder_block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, latent_channels=4), seed=2)
    ours = _check_parity(reference, tmp_path, _images(2, 16), deterministic=False)
    # The Flux.2 pipeline's normalisation: patchify 2x2 into channels, then BatchNorm statistics.
    z = torch.randn(1, 4, 8, 8)
    patched = z.view(1, 4, 4, 2, 4, 2).permute(0, 1, 3, 5, 2, 4).reshape(1, 16, 4, 4)
    bn = reference.bn
    expected = (patched - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + 1e-4)
    offset, scale = ours.own_factors
    tile = lambda a: np.tile(a, (4, 4, 1))
    normalized = (_numpy(z)[0] - tile(offset)) * tile(scale)
    ours_patched = normalized.reshape(4, 2, 4, 2, 4).transpose(4, 1, 3, 0, 2).reshape(16, 4, 4)
    np.testing.assert_allclose(ours_patched, expected[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("variant", [
    # linear attention (64 latent positions > head dim 8), BatchNorm and ReLU in the decoder
    dict(encoder_block_types=("ResBlock", "EfficientViTBlock"), decoder_block_types=("ResBlock", "EfficientViTBlock"),
         encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16),
         encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
         encoder_qkv_multiscales=((), (3,)), decoder_qkv_multiscales=((), (3,)),
         decoder_norm_types=("batch_norm", "rms_norm"), decoder_act_fns=("relu", "silu")),
    # quadratic attention (4 positions), levels without layers, strided conv and interpolation
    dict(encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
         decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
         encoder_block_out_channels=(8, 16, 16), decoder_block_out_channels=(8, 16, 16),
         encoder_layers_per_block=(0, 1, 1), decoder_layers_per_block=(0, 1, 1),
         encoder_qkv_multiscales=((), (), (5,)), decoder_qkv_multiscales=((), (), (5,)),
         downsample_block_type="Conv", upsample_block_type="interpolate"),
])
def test_autoencoder_dc_matches_diffusers(tmp_path, variant):
    torch.manual_seed(0)
    reference = _randomize(AutoencoderDC(latent_channels=4, attention_head_dim=8, scaling_factor=0.4, **variant),
                           seed=3)
    ours = _check_parity(reference, tmp_path, _images(2, 8 if len(variant["encoder_layers_per_block"]) == 3 else 16),
                         deterministic=True)
    np.testing.assert_allclose(ours.own_factors[1], 0.4)


def test_unsupported_or_missing_autoencoders_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="neither one of identity"):
        load_autoencoder(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderTiny"}')
    with pytest.raises(ConfigError, match="AutoencoderTiny"):
        load_autoencoder(str(tmp_path))

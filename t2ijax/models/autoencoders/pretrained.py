"""Autoencoders read from diffusers-format directories (config.json + safetensors), run in Flax.

config.json's `_class_name` picks the port: AutoencoderKL (SD, SDXL, SD3, Flux.1, REPA-E) and
AutoencoderKLFlux2 share `kl.py`; AutoencoderDC is `dc.py`. Torch is never imported.
"""
import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders.dc import AutoencoderDC, DCConfig
from t2ijax.models.autoencoders.inputs import check_images
from t2ijax.models.autoencoders.kl import AutoencoderKL, KLConfig
from t2ijax.models.autoencoders.posterior import Posterior
from t2ijax.models.autoencoders.weights import params_from_torch, params_to_torch
from t2ijax.models.vision.weights import TorchTensors, read_weights

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"  # the name diffusers saves and looks for

FAMILIES = {
    "AutoencoderKL": (KLConfig, AutoencoderKL),
    "AutoencoderKLFlux2": (KLConfig, AutoencoderKL),
    "AutoencoderDC": (DCConfig, AutoencoderDC),
}


def _own_factors(config: dict, tensors: dict[str, np.ndarray], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) with model-space latents = (z - offset) * scale, as the autoencoder's authors set them,
    each [p, p, C] for a pattern repeated every p pixels.

    Flux.2 normalises 2x2-patchified latents with its BatchNorm's running statistics; the patch channel
    c * 4 + 2 i + j is channel c at offset (i, j) in the 2x2 patch.
    """
    if config["_class_name"] == "AutoencoderKLFlux2":
        p = config.get("patch_size", (2, 2))[0]
        mean = tensors["bn.running_mean"].reshape(channels, p, p).transpose(1, 2, 0)
        var = tensors["bn.running_var"].reshape(channels, p, p).transpose(1, 2, 0)
        return mean, 1.0 / np.sqrt(var + config.get("batch_norm_eps", 1e-4))
    scale = np.full((1, 1, channels), config.get("scaling_factor", 1.0), np.float32)
    offset = np.full((1, 1, channels), config.get("shift_factor") or 0.0, np.float32)
    if config.get("latents_mean") is not None:  # EDM-style VAEs publish per-channel statistics
        offset = np.asarray(config["latents_mean"], np.float32).reshape(1, 1, channels)
        scale = scale / np.asarray(config["latents_std"], np.float32).reshape(1, 1, channels)
    return offset.astype(np.float32), scale.astype(np.float32)


class PretrainedAutoencoder:
    """A Flax autoencoder with its parameters; `encode` is jitted, `decode` traces inside the caller's jit."""

    def __init__(self, path: str | Path):
        config, tensors = read_weights(path, "autoencoder")
        family = config.get("_class_name")
        if family not in FAMILIES:
            raise ConfigError(f"autoencoder {path} is a {family!r}; supported: {', '.join(FAMILIES)} "
                              "(config.json's _class_name)")
        config_cls, module_cls = FAMILIES[family]
        self.config = config_cls.from_diffusers(config)
        self.module = module_cls(self.config)
        self.channels = config["latent_channels"]
        self.downsample = self.config.downsample
        self.own_factors = _own_factors(config, tensors, self.channels)
        example = np.zeros((1, 2 * self.downsample, 2 * self.downsample, 3), np.float32)
        self.params = params_from_torch(self.module, example, TorchTensors(tensors, f"autoencoder {path}"))
        # What the latents depend on: the architecture and every weight (a cache key, not a path).
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
        for name in sorted(tensors):
            digest.update(name.encode() + np.ascontiguousarray(tensors[name]).tobytes())
        self.fingerprint = f"{family}-{digest.hexdigest()[:16]}"
        self._encode = jax.jit(lambda params, x: self.module.apply({"params": params}, x, method="encode"))

    def encode(self, images) -> Posterior:
        """images NHWC in [-1, 1] -> posterior over [B, H / downsample, W / downsample, channels]."""
        check_images(images, self.downsample)
        mean, logvar = self._encode(self.params, jnp.asarray(images, jnp.float32))
        return Posterior(mean, logvar)

    def decode(self, latents: jax.Array, params=None) -> jax.Array:
        """Traceable; inside jit pass `params` as an argument (closed over, they would become constants)."""
        return self.module.apply({"params": self.params if params is None else params}, latents, method="decode")


def save_autoencoder_kl(directory: str | Path, config: KLConfig, params: dict, shift_factor: float,
                        scaling_factor: float) -> None:
    """Writes `params` as a diffusers AutoencoderKL directory (loadable here and by diffusers)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    levels = len(config.block_out_channels)
    diffusers_config = dict(dataclasses.asdict(config), _class_name="AutoencoderKL",
                            down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
                            shift_factor=shift_factor, scaling_factor=scaling_factor)
    del diffusers_config["decoder_block_out_channels"]  # AutoencoderKL's decoder mirrors the encoder
    safetensors.numpy.save_file(params_to_torch(params), str(directory / WEIGHTS_FILE))
    (directory / "config.json").write_text(json.dumps(diffusers_config, indent=2))

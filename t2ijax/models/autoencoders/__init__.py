"""Autoencoders map images (NHWC in [-1, 1]) to the space the denoiser trains in.

`config.autoencoder.name` is a registered name (`identity`: pixel space) or a diffusers-format
directory (`pretrained.py`). Every autoencoder has `channels`, `downsample`, `encode(images) ->
Posterior`, `decode(latents, params=None) -> images` (traceable inside jit), `params`, `own_factors` (its authors' latent
offset and scale) and `fingerprint` (what its latents depend on, for caches).
"""
import dataclasses
import json
from pathlib import Path

import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders.inputs import check_images
from t2ijax.models.autoencoders.posterior import Posterior
from t2ijax.registry import Registry

AUTOENCODERS = Registry("autoencoder.name")
PIXEL_SPACE = "identity"


@AUTOENCODERS.register(PIXEL_SPACE)
@dataclasses.dataclass(frozen=True)
class Identity:
    """Pixel space: latents are the images themselves."""

    channels: int = 3
    downsample: int = 1
    fingerprint: str = "identity"
    own_factors: tuple = (np.zeros((1, 1, 3), np.float32), np.ones((1, 1, 3), np.float32))

    def encode(self, images: np.ndarray) -> Posterior:
        check_images(images, self.downsample)
        return Posterior(images, None)

    @property
    def params(self) -> dict:
        return {}

    def decode(self, latents, params=None):
        return latents


def check_autoencoder_name(name: str) -> None:
    """One-line error unless `name` is registered or a directory holding a supported config.json."""
    if name in AUTOENCODERS.names():
        return
    from t2ijax.models.autoencoders.pretrained import FAMILIES

    config = Path(name).expanduser() / "config.json"
    if not config.is_file():
        raise ConfigError(f"config.autoencoder.name='{name}' is neither one of {', '.join(AUTOENCODERS.names())} "
                          "nor a diffusers-format directory with config.json (python -m t2ijax.train_autoencoder "
                          "makes one)")
    family = json.loads(config.read_text()).get("_class_name")
    if family not in FAMILIES:
        raise ConfigError(f"config.autoencoder.name='{name}' is a {family!r}; supported: {', '.join(FAMILIES)}")


def geometry(name: str) -> tuple[int, int]:
    """(latent channels, downsampling) from the name or config.json alone, without reading weights."""
    check_autoencoder_name(name)
    if name in AUTOENCODERS.names():
        ae = AUTOENCODERS.get(name)()
        return ae.channels, ae.downsample
    from t2ijax.models.autoencoders.pretrained import FAMILIES

    config = json.loads((Path(name).expanduser() / "config.json").read_text())
    return config["latent_channels"], FAMILIES[config["_class_name"]][0].from_diffusers(config).downsample


def load_autoencoder(name_or_path: str):
    check_autoencoder_name(name_or_path)
    if name_or_path in AUTOENCODERS.names():
        return AUTOENCODERS.get(name_or_path)()
    from t2ijax.models.autoencoders.pretrained import PretrainedAutoencoder

    return PretrainedAutoencoder(name_or_path)

"""Autoencoders map images (NHWC in [-1, 1]) to the space the denoiser trains in."""
import dataclasses

import numpy as np

from t2ijax.registry import Registry

AUTOENCODERS = Registry("autoencoder.name")


@AUTOENCODERS.register("identity")
@dataclasses.dataclass(frozen=True)
class Identity:
    """Pixel space: latents are the images themselves."""

    channels: int = 3
    downsample: int = 1

    def encode(self, images: np.ndarray) -> np.ndarray:
        return images

    def decode(self, latents):
        return latents


def load_autoencoder(name: str):
    return AUTOENCODERS.get(name)()

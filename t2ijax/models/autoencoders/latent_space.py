"""The space the denoiser trains in: an autoencoder's latents after an affine normalization.

Model-space latents are `(z - offset) * scale`, where offset and scale are [p, p, C] patterns
tiled over the latent (p = 1 for per-channel factors, 2 for Flux.2's patch statistics).
"""
import dataclasses

import numpy as np

from t2ijax.errors import ConfigError


def _tiled(pattern: np.ndarray, height: int, width: int) -> np.ndarray:
    p = pattern.shape[0]
    return np.tile(pattern, (height // p, width // p, 1))


@dataclasses.dataclass(frozen=True)
class LatentSpace:
    autoencoder: object
    offset: np.ndarray   # [p, p, C]
    scale: np.ndarray    # [p, p, C]

    @property
    def channels(self) -> int:
        return self.autoencoder.channels

    @property
    def downsample(self) -> int:
        return self.autoencoder.downsample

    def normalize(self, latents):
        h, w = latents.shape[1:3]
        return (latents - _tiled(self.offset, h, w)) * _tiled(self.scale, h, w)

    @property
    def params(self):
        """The autoencoder's parameters: pass them to `decode` inside jit, where closed-over arrays
        would be compiled in as constants."""
        return self.autoencoder.params

    def decode(self, latents, params=None):
        """Model-space latents [B, h, w, C] -> images in [-1, 1], with `params` (default: the autoencoder's)."""
        if latents.shape[-1] != self.channels:
            raise ConfigError(f"latents have {latents.shape[-1]} channels, the autoencoder takes {self.channels}")
        h, w = latents.shape[1:3]
        return self.autoencoder.decode(latents / _tiled(self.scale, h, w) + _tiled(self.offset, h, w), params)

    def images_to_latents(self, images: np.ndarray):
        """uint8 pixels -> model space through the posterior's mode (pixel space needs no cache)."""
        return self.normalize(self.autoencoder.encode(images.astype(np.float32) / 127.5 - 1.0).mode())

"""config.latents.normalization: how raw latents become the denoiser's (offset and scale)."""
import numpy as np

from t2ijax.registry import Registry

NORMALIZATIONS = Registry("latents.normalization")
NEEDS_STATISTICS = ("channel_stats", "global_stats")  # estimated on a sample of the dataset's latents


def _per_channel(value: np.ndarray, channels: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, np.float32), (1, 1, channels)).copy()


@NORMALIZATIONS.register("none")
def _none(autoencoder, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _per_channel(0.0, autoencoder.channels), _per_channel(1.0, autoencoder.channels)


@NORMALIZATIONS.register("config_factors")
def _config_factors(autoencoder, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The autoencoder's own: diffusers' shift_factor and scaling_factor, Flux.2's BatchNorm statistics."""
    return autoencoder.own_factors


@NORMALIZATIONS.register("channel_stats")
def _channel_stats(autoencoder, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _per_channel(sample.mean((0, 1, 2)), sample.shape[-1]), _per_channel(1.0 / sample.std((0, 1, 2)),
                                                                                sample.shape[-1])


@NORMALIZATIONS.register("global_stats")
def _global_stats(autoencoder, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _per_channel(sample.mean(), sample.shape[-1]), _per_channel(1.0 / sample.std(), sample.shape[-1])


def channel_report(latents: np.ndarray) -> dict[str, list[float]]:
    """Per-channel mean and standard deviation, rounded for logs and JSON."""
    stats = {"mean": latents.mean((0, 1, 2)), "std": latents.std((0, 1, 2))}
    return {k: np.round(v.astype(np.float64), 4).tolist() for k, v in stats.items()}

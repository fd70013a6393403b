"""The one check every encoder runs on what it is given."""
import numpy as np

from t2ijax.errors import ConfigError


def check_images(images, downsample: int) -> None:
    """One-line error unless `images` are float NHWC [B, H, W, 3] in [-1, 1] with sides divisible by `downsample`."""
    shape = tuple(np.shape(images))
    if len(shape) != 4 or shape[-1] != 3:
        hint = "; it looks NCHW, transpose to NHWC" if len(shape) == 4 and shape[1] == 3 else ""
        raise ConfigError(f"images must be NHWC [batch, height, width, 3], got shape {shape}{hint}")
    if shape[1] % downsample or shape[2] % downsample:
        raise ConfigError(f"image sides {shape[1:3]} must be multiples of the autoencoder's downsampling {downsample}")
    low, high = float(np.min(images)), float(np.max(images))
    if np.asarray(images).dtype == np.uint8 or low < -1.001 or high > 1.001:
        raise ConfigError(f"images must be floats in [-1, 1], got values in [{low:g}, {high:g}] "
                          f"({np.asarray(images).dtype}); convert uint8 pixels with x / 127.5 - 1")

"""Resampling that reproduces torch.nn.functional.interpolate (align_corners=False).

The reference feature networks see inputs (and DINOv2 its position embeddings) resampled
by torch, whose kernels differ from jax.image.resize: plain bicubic uses a = -0.75 and
clamps taps at the border; antialiased resampling follows PIL (a = -0.5, the kernel
stretched when shrinking, taps inside the image renormalised). Each axis becomes an
[out, in] weight matrix built in numpy at trace time and applied as one matmul.
"""
import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("bilinear", "bicubic")


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter a."""
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


def _antialiased(in_size: int, out_size: int, method: str) -> np.ndarray:
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    if method == "bilinear":
        kernel, support = (lambda x: np.maximum(0.0, 1.0 - np.abs(x))), 1.0 * stretch
    else:
        kernel, support = (lambda x: _cubic(x, -0.5)), 2.0 * stretch
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = scale * (i + 0.5)
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        taps = kernel((np.arange(lo, hi) - centre + 0.5) / stretch)
        weights[i, lo:hi] = taps / taps.sum() if taps.sum() else taps
    return weights


def _plain(in_size: int, out_size: int, method: str) -> np.ndarray:
    source = (in_size / out_size) * (np.arange(out_size) + 0.5) - 0.5
    rows = np.arange(out_size)
    weights = np.zeros((out_size, in_size))
    if method == "bilinear":
        source = np.maximum(source, 0.0)
        left = np.floor(source).astype(int)
        frac = source - left
        np.add.at(weights, (rows, left), 1.0 - frac)
        np.add.at(weights, (rows, np.minimum(left + 1, in_size - 1)), frac)
        return weights
    left = np.floor(source).astype(int)
    frac = source - left
    for offset in (-1, 0, 1, 2):
        taps = _cubic(frac - offset, -0.75)
        np.add.at(weights, (rows, np.clip(left + offset, 0, in_size - 1)), taps)
    return weights


def resize_matrix(in_size: int, out_size: int, method: str, antialias: bool) -> np.ndarray:
    """[out_size, in_size] float64 weights of torch's `interpolate` along one axis."""
    if method not in METHODS:
        raise ValueError(f"resize method {method!r} is not one of {METHODS}")
    return (_antialiased if antialias else _plain)(in_size, out_size, method)


def resize(images: jax.Array, size: tuple[int, int], method: str, antialias: bool = False) -> jax.Array:
    """Resizes [..., H, W, C] images to `size` (height, width) as torch would, in float32."""
    height, width = images.shape[-3:-1]
    if (height, width) == tuple(size):
        return images.astype(jnp.float32)
    rows = jnp.asarray(resize_matrix(height, size[0], method, antialias), jnp.float32)
    cols = jnp.asarray(resize_matrix(width, size[1], method, antialias), jnp.float32)
    highest = jax.lax.Precision.HIGHEST
    out = jnp.einsum("oh,...hwc->...owc", rows, images.astype(jnp.float32), precision=highest)
    return jnp.einsum("pw,...owc->...opc", cols, out, precision=highest)

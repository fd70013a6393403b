"""Convolutional pieces shared by the autoencoder ports, NHWC, float32.

Modules are named as the diffusers modules they mirror (dots included, e.g. "down_blocks.0"),
so a parameter's path is its checkpoint name (`weights.py`). Channel orders follow torch
where they matter to the weights: pixel (un)shuffle puts the sub-pixel last, (c, i, j).
"""
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.models.layers import patchify, unpatchify

HIGHEST = jax.lax.Precision.HIGHEST
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": nn.silu,
    "swish": nn.silu,
    "relu": nn.relu,
    "relu6": nn.relu6,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "mish": lambda x: x * jnp.tanh(nn.softplus(x)),
}


def conv(features: int, kernel: int, name: str | None = None, stride: int = 1, padding: int | None = None, groups: int = 1,
         bias: bool = True) -> nn.Conv:
    """torch.nn.Conv2d's arithmetic: symmetric zero padding (kernel // 2 unless given)."""
    pad = kernel // 2 if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                   feature_group_count=groups, use_bias=bias, precision=HIGHEST, name=name,
                   kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                            (None, None, "conv_in", "conv_out")))


def dense(features: int, name: str | None = None, bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=bias, precision=HIGHEST, name=name,
                    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("conv_in", "conv_out")))


def group_norm(groups: int, eps: float, name: str) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, epsilon=eps, name=name)


class RMSNorm(nn.Module):
    """diffusers' RMSNorm over channels, with a scale and a bias."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * scale + bias


class FrozenBatchNorm(nn.Module):
    """BatchNorm2d in evaluation mode: the checkpoint's running statistics, never updated."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        mean = self.param("running_mean", nn.initializers.zeros, (c,))
        var = self.param("running_var", nn.initializers.ones, (c,))
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
    """[B, H, W, C] -> [B, H/f, W/f, C f f], torch's channel order."""
    b, h, w, _ = x.shape
    return patchify(x, factor).reshape(b, h // factor, w // factor, -1)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """Inverse of pixel_unshuffle: [B, H, W, C f f] -> [B, H f, W f, C]."""
    b, h, w, d = x.shape
    return unpatchify(x.reshape(b, h * w, d), factor, h * factor, w * factor)


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)

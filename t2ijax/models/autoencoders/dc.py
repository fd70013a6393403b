"""diffusers' AutoencoderDC (deep compression autoencoder, DC-AE, used by SANA) in Flax.

Deterministic: the encoder gives the latent itself. Each level changes resolution with a
pixel (un)shuffle plus a parameter-free shortcut (channel-group mean down, channel repeat
up); deep levels use EfficientViT blocks (multi-scale ReLU linear attention, then a gated
depthwise-conv MLP).
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders.layers import (ACTIVATIONS, HIGHEST, FrozenBatchNorm, RMSNorm, conv, dense,
                                               pixel_shuffle, pixel_unshuffle, upsample_nearest)
from t2ijax.models.autoencoders.weights import config_fields

_BLOCK_TYPES = ("ResBlock", "EfficientViTBlock")
_NORMS = {"rms_norm": RMSNorm, "batch_norm": FrozenBatchNorm}


def _per_level(value, levels: int) -> tuple:
    return (value,) * levels if isinstance(value, str) else tuple(value)


@dataclasses.dataclass(frozen=True)
class DCConfig:
    in_channels: int = 3
    latent_channels: int = 32
    attention_head_dim: int = 32
    encoder_block_types: tuple[str, ...] = ()
    decoder_block_types: tuple[str, ...] = ()
    encoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_layers_per_block: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_layers_per_block: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    encoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    decoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    upsample_block_type: str = "pixel_shuffle"
    downsample_block_type: str = "pixel_unshuffle"
    decoder_norm_types: tuple[str, ...] = ()
    decoder_act_fns: tuple[str, ...] = ()
    encoder_out_shortcut: bool = True
    decoder_in_shortcut: bool = True
    decoder_conv_act_fn: str = "relu"

    @classmethod
    def from_diffusers(cls, cfg: dict) -> "DCConfig":
        levels = len(cfg.get("encoder_block_out_channels", cls.encoder_block_out_channels))
        per_level = {"encoder_block_types": "ResBlock", "decoder_block_types": "ResBlock",
                     "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu"}
        values = config_fields(cls, cfg)
        for name, default in per_level.items():  # one value for every level, or one per level
            values[name] = _per_level(values.get(name, default), levels)
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        for what, values, allowed in (
                ("block type", self.encoder_block_types + self.decoder_block_types, _BLOCK_TYPES),
                ("norm", self.decoder_norm_types, tuple(_NORMS)),
                ("activation", self.decoder_act_fns + (self.decoder_conv_act_fn,), tuple(ACTIVATIONS))):
            unsupported = [v for v in values if v not in allowed]
            if unsupported:
                raise ConfigError(f"AutoencoderDC {what} {unsupported[0]!r} is not supported; "
                                  f"supported: {', '.join(allowed)}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_block_out_channels) - 1)


class ResBlock(nn.Module):
    norm: str
    act: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h = conv(c, 3, "conv2", bias=False)(ACTIVATIONS[self.act](conv(c, 3, "conv1")(x)))
        return x + _NORMS[self.norm](name="norm")(h)


class MultiscaleLinearAttention(nn.Module):
    """ReLU linear attention over q/k/v and their depthwise-aggregated copies at each kernel size.

    Heads are groups of 3 x head_dim consecutive channels of [q | k | v] (as in DC-AE, a head
    group may span q, k and v channels); with no more positions than head_dim the attention is
    the quadratic form with the same normalisation.
    """

    head_dim: int
    kernel_sizes: tuple[int, ...]
    norm: str
    eps: float = 1e-15

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        heads = c // self.head_dim
        inner = heads * self.head_dim
        qkv = jnp.concatenate([dense(inner, name, bias=False)(x) for name in ("to_q", "to_k", "to_v")], axis=-1)
        scales = [qkv]
        for i, k in enumerate(self.kernel_sizes):
            y = conv(3 * inner, k, f"to_qkv_multiscale.{i}.proj_in", groups=3 * inner, bias=False)(qkv)
            scales.append(conv(3 * inner, 1, f"to_qkv_multiscale.{i}.proj_out", groups=3 * heads, bias=False)(y))
        qkv = jnp.concatenate(scales, axis=-1).reshape(b, h * w, -1, 3, self.head_dim)
        q, k, v = nn.relu(qkv[..., 0, :]), nn.relu(qkv[..., 1, :]), qkv[..., 2, :]
        if h * w > self.head_dim:
            v = jnp.pad(v, ((0, 0), (0, 0), (0, 0), (0, 1)), constant_values=1.0)
            kv = jnp.einsum("bngd,bnge->bgde", v, k, precision=HIGHEST)
            out = jnp.einsum("bgde,bnge->bngd", kv, q, precision=HIGHEST)
            out = out[..., :-1] / (out[..., -1:] + self.eps)
        else:
            scores = jnp.einsum("bmgd,bngd->bgmn", k, q, precision=HIGHEST)
            scores = scores / (scores.sum(axis=2, keepdims=True) + self.eps)
            out = jnp.einsum("bmgd,bgmn->bngd", v, scores, precision=HIGHEST)
        out = dense(c, "to_out", bias=False)(out.reshape(b, h, w, -1))
        return x + _NORMS[self.norm](name="norm_out")(out)


class GLUMBConv(nn.Module):
    """1x1 expand (x4, doubled for the gate), SiLU, depthwise 3x3, SiLU gate, 1x1 project, RMSNorm."""

    expand_ratio: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        hidden = self.expand_ratio * c
        y = nn.silu(conv(2 * hidden, 1, "conv_inverted")(x))
        y, gate = jnp.split(conv(2 * hidden, 3, "conv_depth", groups=2 * hidden)(y), 2, axis=-1)
        y = conv(c, 1, "conv_point", bias=False)(y * nn.silu(gate))
        return x + RMSNorm(name="norm")(y)


class EfficientViTBlock(nn.Module):
    head_dim: int
    kernel_sizes: tuple[int, ...]
    norm: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = MultiscaleLinearAttention(self.head_dim, self.kernel_sizes, self.norm, name="attn")(x)
        return GLUMBConv(name="conv_out")(x)


def _block(kind: str, head_dim: int, kernel_sizes: tuple[int, ...], norm: str, act: str, name: str) -> nn.Module:
    if kind == "ResBlock":
        return ResBlock(norm, act, name=name)
    return EfficientViTBlock(head_dim, kernel_sizes, norm, name=name)


class DownBlock(nn.Module):
    """Halves the side: stride-2 conv, or conv then pixel unshuffle; plus the channel-mean shortcut."""

    out_channels: int
    unshuffle: bool
    shortcut: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.unshuffle:
            y = pixel_unshuffle(conv(self.out_channels // 4, 3, "conv")(x), 2)
        else:
            y = conv(self.out_channels, 3, "conv", stride=2)(x)
        if not self.shortcut:
            return y
        s = pixel_unshuffle(x, 2)
        b, h, w, c = s.shape
        return y + s.reshape(b, h, w, self.out_channels, c // self.out_channels).mean(-1)


class UpBlock(nn.Module):
    """Doubles the side: conv then pixel shuffle, or nearest upsampling then conv; plus the repeat shortcut."""

    out_channels: int
    interpolate: bool
    shortcut: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.interpolate:
            y = conv(self.out_channels, 3, "conv")(upsample_nearest(x))
        else:
            y = pixel_shuffle(conv(4 * self.out_channels, 3, "conv")(x), 2)
        if not self.shortcut:
            return y
        repeats = 4 * self.out_channels // x.shape[-1]
        return y + pixel_shuffle(jnp.repeat(x, repeats, axis=-1), 2)


class Encoder(nn.Module):
    config: DCConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        widths, layers = cfg.encoder_block_out_channels, cfg.encoder_layers_per_block
        unshuffle = cfg.downsample_block_type == "pixel_unshuffle"
        if layers[0] > 0:
            x = conv(widths[0], 3, "conv_in")(x)
        else:
            x = DownBlock(widths[1], unshuffle, shortcut=False, name="conv_in")(x)
        for i, (width, n) in enumerate(zip(widths, layers)):
            for j in range(n):
                x = _block(cfg.encoder_block_types[i], cfg.attention_head_dim, cfg.encoder_qkv_multiscales[i],
                           "rms_norm", "silu", f"down_blocks.{i}.{j}")(x)
            if i < len(widths) - 1 and n > 0:
                x = DownBlock(widths[i + 1], unshuffle, shortcut=True, name=f"down_blocks.{i}.{n}")(x)
        out = conv(cfg.latent_channels, 3, "conv_out")(x)
        if cfg.encoder_out_shortcut:
            b, h, w, c = x.shape
            out = out + x.reshape(b, h, w, cfg.latent_channels, c // cfg.latent_channels).mean(-1)
        return out


class Decoder(nn.Module):
    config: DCConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        widths, layers = cfg.decoder_block_out_channels, cfg.decoder_layers_per_block
        interpolate = cfg.upsample_block_type == "interpolate"
        x = conv(widths[-1], 3, "conv_in")(z)
        if cfg.decoder_in_shortcut:
            x = x + jnp.repeat(z, widths[-1] // cfg.latent_channels, axis=-1)
        for i in reversed(range(len(widths))):
            j = 0
            if i < len(widths) - 1 and layers[i] > 0:
                x = UpBlock(widths[i], interpolate, shortcut=True, name=f"up_blocks.{i}.0")(x)
                j = 1
            for k in range(layers[i]):
                x = _block(cfg.decoder_block_types[i], cfg.attention_head_dim, cfg.decoder_qkv_multiscales[i],
                           cfg.decoder_norm_types[i], cfg.decoder_act_fns[i], f"up_blocks.{i}.{j + k}")(x)
        x = ACTIVATIONS[cfg.decoder_conv_act_fn](RMSNorm(name="norm_out")(x))
        if layers[0] > 0:
            return conv(cfg.in_channels, 3, "conv_out")(x)
        return UpBlock(cfg.in_channels, interpolate, shortcut=False, name="conv_out")(x)


class AutoencoderDC(nn.Module):
    """`encode` -> (latent, None): the posterior is a point; `decode`."""

    config: DCConfig

    def setup(self):
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def encode(self, images: jax.Array) -> tuple[jax.Array, None]:
        return self.encoder(images), None

    def decode(self, latents: jax.Array) -> jax.Array:
        return self.decoder(latents)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.decode(self.encode(images)[0])

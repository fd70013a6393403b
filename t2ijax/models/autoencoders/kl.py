"""diffusers' AutoencoderKL (SD 1.x/2.x, SDXL, SD3, Flux.1, REPA-E) and AutoencoderKLFlux2 in Flax.

Encoder: conv, down blocks of ResNet blocks (each but the last halves the side), a middle
ResNet-attention-ResNet block, GroupNorm-SiLU-conv to 2 x latent channels (mean, log-variance).
The decoder mirrors it with one more ResNet block per level and nearest-neighbour upsampling.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders.layers import ACTIVATIONS, HIGHEST, conv, dense, group_norm, upsample_nearest
from t2ijax.models.autoencoders.weights import config_fields

_EPS = 1e-6  # every norm of the family


@dataclasses.dataclass(frozen=True)
class KLConfig:
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (64,)
    decoder_block_out_channels: tuple[int, ...] | None = None  # Flux.2: a decoder wider than the encoder
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    @classmethod
    def from_diffusers(cls, cfg: dict) -> "KLConfig":
        for key, allowed in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            if any(block != allowed for block in cfg.get(key, [allowed])):
                raise ConfigError(f"AutoencoderKL {key}={cfg[key]} is not supported; only {allowed} blocks are")
        if cfg.get("act_fn", "silu") not in ACTIVATIONS:
            raise ConfigError(f"AutoencoderKL act_fn={cfg['act_fn']!r} is not one of: {', '.join(ACTIVATIONS)}")
        return cls(**config_fields(cls, cfg))

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


class ResnetBlock(nn.Module):
    out_channels: int
    groups: int
    act: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.act]
        h = conv(self.out_channels, 3, "conv1")(act(group_norm(self.groups, _EPS, "norm1")(x)))
        h = conv(self.out_channels, 3, "conv2")(act(group_norm(self.groups, _EPS, "norm2")(h)))
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, "conv_shortcut")(x)
        return x + h


class SpatialAttention(nn.Module):
    """One head over all positions, as wide as the channels, with a residual."""

    groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        tokens = group_norm(self.groups, _EPS, "group_norm")(x).reshape(b, h * w, c)
        q, k, v = (dense(c, name)(tokens) for name in ("to_q", "to_k", "to_v"))
        logits = jnp.einsum("bqc,bkc->bqk", q, k, precision=HIGHEST) / jnp.sqrt(c)
        out = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(logits, axis=-1), v, precision=HIGHEST)
        return x + dense(c, "to_out.0")(out).reshape(b, h, w, c)


class MidBlock(nn.Module):
    groups: int
    act: str
    attention: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = ResnetBlock(c, self.groups, self.act, name="resnets.0")(x)
        if self.attention:
            x = SpatialAttention(self.groups, name="attentions.0")(x)
        return ResnetBlock(c, self.groups, self.act, name="resnets.1")(x)


class Encoder(nn.Module):
    """Images [B, H, W, 3] -> [B, H/f, W/f, 2 x latent channels] (mean, then log-variance); with
    `features_only`, the [B, H/f, W/f, block_out_channels[-1]] map conv_out reads (the autoencoder teacher's)."""

    config: KLConfig
    features_only: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        groups, act = cfg.norm_num_groups, cfg.act_fn
        x = conv(cfg.block_out_channels[0], 3, "conv_in")(x)
        for i, channels in enumerate(cfg.block_out_channels):
            for j in range(cfg.layers_per_block):
                x = ResnetBlock(channels, groups, act, name=f"down_blocks.{i}.resnets.{j}")(x)
            if i < len(cfg.block_out_channels) - 1:
                x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))  # diffusers pads only bottom and right
                x = conv(channels, 3, f"down_blocks.{i}.downsamplers.0.conv", stride=2, padding=0)(x)
        x = MidBlock(groups, act, cfg.mid_block_add_attention, name="mid_block")(x)
        x = ACTIVATIONS[act](group_norm(groups, _EPS, "conv_norm_out")(x))
        if self.features_only:
            return x
        return conv(2 * cfg.latent_channels, 3, "conv_out")(x)


class Decoder(nn.Module):
    """Latents [B, h, w, latent channels] -> images [B, h f, w f, 3]."""

    config: KLConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        groups, act = cfg.norm_num_groups, cfg.act_fn
        channels = tuple(reversed(cfg.decoder_block_out_channels or cfg.block_out_channels))
        x = conv(channels[0], 3, "conv_in")(z)
        x = MidBlock(groups, act, cfg.mid_block_add_attention, name="mid_block")(x)
        for i, width in enumerate(channels):
            for j in range(cfg.layers_per_block + 1):
                x = ResnetBlock(width, groups, act, name=f"up_blocks.{i}.resnets.{j}")(x)
            if i < len(channels) - 1:
                x = conv(width, 3, f"up_blocks.{i}.upsamplers.0.conv")(upsample_nearest(x))
        x = ACTIVATIONS[act](group_norm(groups, _EPS, "conv_norm_out")(x))
        return conv(cfg.out_channels, 3, "conv_out")(x)


class AutoencoderKL(nn.Module):
    """`encode` -> (mean, logvar) with logvar clipped to [-30, 20] as diffusers does; `decode`."""

    config: KLConfig

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.use_quant_conv:
            self.quant_conv = conv(2 * cfg.latent_channels, 1)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = conv(cfg.latent_channels, 1)

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        moments = self.encoder(images)
        if self.config.use_quant_conv:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, latents: jax.Array) -> jax.Array:
        if self.config.use_post_quant_conv:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)

    def __call__(self, images: jax.Array) -> jax.Array:
        """Reconstruction from the posterior mean (used to initialise every parameter)."""
        return self.decode(self.encode(images)[0])

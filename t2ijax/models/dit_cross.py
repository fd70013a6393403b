"""DiT with cross-attention to text (PixArt-alpha). Numerically equal to diffusers'
PixArtTransformer2DModel (norm_type "ada_norm_single", no additional conditions).

Image tokens carry a fixed 2-D sin-cos position table; each block runs self-attention, then
cross-attention of the image tokens over the (masked) text tokens, then a GELU-tanh MLP.
adaLN-single: one timestep MLP gives `embedded_timestep`, one SiLU + Linear (`t_block`) turns it
into 6 modulation vectors shared by every block, and each block adds its own learned
scale_shift_table [6, hidden] to them.

Initialisation as PixArt's: xavier-uniform kernels, zero biases, N(0, 1/hidden) scale-shift tables;
the cross-attention output and the final projection start at zero, so a fresh model predicts 0.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from t2ijax.models.layers import (Dense, FeedForward, masked_attention, modulate, patchify, sincos_2d,
                                  timestep_embedding, unpatchify)
from t2ijax.models.prx import MLPEmbedder
from t2ijax.models.stack import TOKENS, Block, Denoiser

TIMESTEPS = 1000.0  # diffusers' PixArt takes DDPM timesteps in [0, 1000): t in [0, 1] becomes 1000 t


def sincos_positions(grid_h: int, grid_w: int, dim: int, base_size: int, interpolation_scale: float) -> np.ndarray:
    """PixArt's position table for a grid_h x grid_w token grid: [grid_h * grid_w, dim] fp32. Each side is
    stretched to span base_size / interpolation_scale positions whatever its token count."""
    def side(n: int) -> np.ndarray:  # fp32, as diffusers computes them
        return np.arange(n, dtype=np.float32) / np.float32(n / base_size) / np.float32(interpolation_scale)

    return sincos_2d(side(grid_h), side(grid_w), dim)


class Attention(nn.Module):
    """Multi-head attention with biases: self-attention when `context` is None (fused qkv), else the
    queries of `x` over the keys and values of `context` where `context_mask`."""

    num_heads: int
    head_dim: int
    zero_out: bool = False  # the output projection starts at zero
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: str = "xla"

    @nn.compact
    def __call__(self, x, context=None, context_mask=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        heads = (self.num_heads, self.head_dim)
        if context is None:
            q, k, v = jnp.unstack(Dense((3, *heads), ("embed", None, "heads", "kv"), name="qkv", **kw)(x), axis=2)
            context_mask = jnp.ones(x.shape[:2], bool)
        else:
            # a plain Linear whose output axis holds the heads one after another, as diffusers' to_q
            q = Dense(self.num_heads * self.head_dim, ("embed", "heads"), name="q", **kw)(x)
            q = q.reshape(*x.shape[:2], *heads)
            k, v = jnp.unstack(Dense((2, *heads), ("embed", None, "heads", "kv"), name="kv", **kw)(context), axis=2)
        out = masked_attention(q, k, v, context_mask, self.attention_impl)
        return Dense(self.num_heads * self.head_dim, ("heads", "kv", "embed"), n_in=2, zero_init=self.zero_out,
                     name="out", **kw)(out)


class DiTCrossBlock(Block):
    """Modulated, gated self-attention; cross-attention to the text (neither modulated nor gated);
    modulated, gated GELU-tanh MLP. Returns (img, None) so that nn.scan can carry the image tokens."""


    @nn.compact
    def __call__(self, img, txt, text_mask, mod):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        img = nn.with_logical_constraint(img, TOKENS)
        init = nn.with_logical_partitioning(nn.initializers.normal(self.hidden_size ** -0.5), (None, "embed"))
        table = self.param("scale_shift_table", init, (6, self.hidden_size), self.param_dtype)
        attn_shift, attn_scale, attn_gate, mlp_shift, mlp_scale, mlp_gate = jnp.split(
            table.astype(jnp.float32)[None] + mod, 6, axis=1)
        attention = lambda name, zero_out: Attention(self.num_heads, self.hidden_size // self.num_heads, zero_out,
                                                     attention_impl=self.attention_impl, name=name, **kw)

        out = attention("self_attention", False)(modulate(img, attn_shift, attn_scale, self.dtype))
        img = (img + attn_gate * out).astype(self.dtype)
        img = img + attention("cross_attention", True)(img, txt, text_mask)

        mlp = FeedForward(self.hidden_size, int(self.hidden_size * self.mlp_ratio), name="mlp", **kw)
        img = (img + mlp_gate * mlp(modulate(img, mlp_shift, mlp_scale, self.dtype))).astype(self.dtype)
        return nn.with_logical_constraint(img, TOKENS), None


class DiTCross(Denoiser):
    """PixArt-alpha denoiser; fields mirror diffusers' PixArtTransformer2DModel config.

    __call__(x [B,H,W,C] NHWC, t [B] in [0,1] (1 = noise; the reference sees timestep 1000 t),
    text [B,L,context_in_dim], text_mask [B,L] bool, True = real token) -> [B,H,W,C]. The image
    queries attend over the real text tokens only. H and W may differ, and differ from
    sample_size: the position table is computed for the actual token grid, each side stretched
    to sample_size / patch_size / interpolation_scale positions as diffusers does. Routing and
    REPA's capture: t2ijax/models/stack.py.
    """

    mlp_ratio: float = 4.0  # diffusers' PixArt, SD3 and Flux, and U-ViT's
    sample_size: int = 64  # latent side the position table is laid out for (diffusers' sample_size)
    interpolation_scale: float = 1.0

    def _check_config(self, x, pooled, guidance):
        self._check_common(x)
        if pooled is not None or guidance is not None:
            raise ValueError("dit_cross is conditioned on the text tokens only: it takes no pooled vector or guidance")

    def _run(self, img, state, start: int, end: int, rope):
        """Blocks start..end-1 on the image tokens; `state` (text tokens, text mask, modulation) passes
        through unchanged. No RoPE: positions are added to the tokens before the first block."""
        if self.is_initializing():
            return self.init_blocks(DiTCrossBlock, self.block_fields(), "blocks", self.depth, img, *state), state
        return self.apply_blocks(DiTCrossBlock(**self.block_fields()), "blocks", start, end, img, *state), state

    @nn.compact
    def __call__(self, x, t, text, text_mask, route_rng=None, pooled=None, guidance=None):
        self._check_config(x, pooled, guidance)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, h, w, c = x.shape
        p = self.patch_size
        grid = (h // p, w // p)

        img = Dense(self.hidden_size, ("conv_in", "embed"), name="patch_embed", **kw)(patchify(x, p).astype(self.dtype))
        positions = sincos_positions(*grid, self.hidden_size, self.sample_size // p, self.interpolation_scale)
        img = (img + jnp.asarray(positions)[None]).astype(self.dtype)

        txt = Dense(self.hidden_size, (None, "mlp"), name="caption_in", **kw)(text.astype(self.dtype))
        txt = Dense(self.hidden_size, ("mlp", "embed"), name="caption_out", **kw)(nn.gelu(txt, approximate=True))
        txt = nn.with_logical_constraint(txt, TOKENS)

        embedded_t = MLPEmbedder(self.hidden_size, name="time_in", **kw)(timestep_embedding(t * TIMESTEPS, 256))
        mod = Dense(6 * self.hidden_size, ("embed", None), name="t_block", **kw)(nn.silu(embedded_t))
        mod = mod.astype(jnp.float32).reshape(b, 6, self.hidden_size)

        state = (txt, text_mask.astype(bool), mod)
        img = self.routed_blocks(img, state, None, route_rng, grid, self._run, self.depth)[0]

        init = nn.with_logical_partitioning(nn.initializers.normal(self.hidden_size ** -0.5), (None, "embed"))
        table = self.param("scale_shift_table", init, (2, self.hidden_size), self.param_dtype)
        shift, scale = jnp.split(table.astype(jnp.float32)[None] + embedded_t.astype(jnp.float32)[:, None], 2, axis=1)
        out = Dense(p * p * c, ("embed", "conv_in"), zero_init=True, name="proj_out",
                    **kw)(modulate(img, shift, scale, self.dtype))
        return unpatchify(out, p, h, w, channels_last=True).astype(x.dtype)

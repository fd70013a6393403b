"""Flux denoiser (Black Forest Labs): double-stream blocks (text and image tokens with their own weights,
one joint attention) then single-stream blocks on [text ‖ image] (attention and MLP in parallel from the
same modulated tokens). Numerically equal to diffusers' FluxTransformer2DModel when every text token is real.

Where t2ijax differs from the reference: the model packs and unpacks the NHWC latent itself
(`patch_size` is the packing factor, 2 in Flux; diffusers' in_channels is in_channels * patch_size**2) and
builds the RoPE ids itself (image (0, row, col), text 0); padded text tokens are masked out as keys in
every attention; without a `pooled` vector it pools the text as the mean of its real tokens.
Initialisation: xavier-uniform kernels and zero biases; the adaLN modulations and proj_out start at zero
(adaLN-Zero, as PRX), so a fresh model predicts 0.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from t2ijax.models.layers import (Dense, FeedForward, RMSNorm, adaln_modulation, apply_rope, grid_positions,
                                  masked_attention, masked_mean, modulate, patchify, rope_tables, timestep_embedding,
                                  unpatchify)
from t2ijax.models.prx import MLPEmbedder
from t2ijax.models.stack import TOKENS, Block, Denoiser

TIME_FACTOR = 1000.0  # diffusers' Flux embeds t * 1000 and guidance * 1000


def _rope_image(x, n_txt: int, rope):
    """RoPE on the image tokens behind the first n_txt text tokens of x [B, L, heads, head_dim]. Text ids are 0
    in Flux: their rotation is the identity, so the text tokens are left as they are."""
    if rope is None:
        return x
    return jnp.concatenate([x[:, :n_txt], apply_rope(x[:, n_txt:], *rope)], axis=1)


class _Block(Block):

    def _kw(self):
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def _qkv(self, x, prefix: str = ""):
        """q, k, v [B, L, heads, head_dim] from one fused projection (with bias), q and k RMS-normalised."""
        heads = (self.num_heads, self.hidden_size // self.num_heads)
        qkv = Dense((3, *heads), ("embed", None, "heads", "kv"), name=f"{prefix}qkv", **self._kw())(x)
        norm = lambda which: RMSNorm(eps=1e-6, axis_name="kv", name=f"{prefix}norm_{which}", **self._kw())
        return norm("q")(qkv[:, :, 0]), norm("k")(qkv[:, :, 1]), qkv[:, :, 2]

    def _heads_out(self, x, name: str, use_bias: bool = True):
        return Dense(self.hidden_size, ("heads", "kv", "embed"), n_in=2, use_bias=use_bias, name=name,
                     **self._kw())(x)


class DoubleStreamBlock(_Block):
    """adaLN-Zero on both streams, one attention over [text ‖ image], then each stream's own MLP.
    Maps ((img, txt), vec, key_mask, rope) -> ((img, txt), None) so that nn.scan carries both streams."""

    @nn.compact
    def __call__(self, carry, vec, key_mask, rope):
        img, txt = (nn.with_logical_constraint(x, TOKENS) for x in carry)
        n_txt = txt.shape[1]
        img_mod = adaln_modulation(vec, 6, "img_mod", self.hidden_size, **self._kw())
        txt_mod = adaln_modulation(vec, 6, "txt_mod", self.hidden_size, **self._kw())
        img_q, img_k, img_v = self._qkv(modulate(img, *img_mod[:2], self.dtype), "img_")
        txt_q, txt_k, txt_v = self._qkv(modulate(txt, *txt_mod[:2], self.dtype), "txt_")
        joint = lambda a, b: _rope_image(jnp.concatenate([a, b], axis=1), n_txt, rope)
        out = masked_attention(joint(txt_q, img_q), joint(txt_k, img_k), jnp.concatenate([txt_v, img_v], axis=1),
                               key_mask, self.attention_impl)

        def update(x, attn_out, mod, stream):
            _, _, attn_gate, mlp_shift, mlp_scale, mlp_gate = mod
            x = (x + attn_gate * self._heads_out(attn_out, f"{stream}_out")).astype(self.dtype)
            mlp = FeedForward(self.hidden_size, int(self.hidden_size * self.mlp_ratio), name=f"{stream}_mlp",
                              **self._kw())(modulate(x, mlp_shift, mlp_scale, self.dtype))
            return nn.with_logical_constraint((x + mlp_gate * mlp).astype(self.dtype), TOKENS)

        return (update(img, out[:, n_txt:], img_mod, "img"), update(txt, out[:, :n_txt], txt_mod, "txt")), None


class SingleStreamBlock(_Block):
    """One adaLN-Zero modulation of [text ‖ image]; attention and a GELU MLP in parallel from it, their outputs
    projected back by one linear map (held as two kernels, the attention's over (heads, head_dim), so that
    each keeps its tensor-parallel split; their sum is diffusers' proj_out). Same carry as DoubleStreamBlock."""

    @nn.compact
    def __call__(self, carry, vec, key_mask, rope):
        img, txt = carry
        n_txt = txt.shape[1]
        x = nn.with_logical_constraint(jnp.concatenate([txt, img], axis=1), TOKENS)
        shift, scale, gate = adaln_modulation(vec, 3, "mod", self.hidden_size, **self._kw())
        h = modulate(x, shift, scale, self.dtype)
        q, k, v = self._qkv(h)
        attn = masked_attention(_rope_image(q, n_txt, rope), _rope_image(k, n_txt, rope), v, key_mask,
                                self.attention_impl)
        mlp = Dense(int(self.hidden_size * self.mlp_ratio), ("embed", "mlp"), name="proj_mlp", **self._kw())(h)
        out = self._heads_out(attn, "attn_out", use_bias=False) + Dense(
            self.hidden_size, ("mlp", "embed"), name="mlp_out", **self._kw())(nn.gelu(mlp, approximate=True))
        x = nn.with_logical_constraint((x + gate * out).astype(self.dtype), TOKENS)
        return (x[:, n_txt:], x[:, :n_txt]), None


class Flux(Denoiser):
    """Flux text-to-image denoiser; fields follow diffusers' FluxTransformer2DModel config
    (t2ijax/interop/flux_weights.py maps one to the other).

    __call__(x [B,H,W,C] NHWC, t [B] in [0,1] (1 = noise), text [B,L,context_in_dim], text_mask [B,L] bool
    (True = real token), route_rng, pooled [B, pooled_projection_dim] or None, guidance [B] or None) -> [B,H,W,C].
    `depth` counts all blocks: the first `double_blocks` are double-stream, the rest single-stream (diffusers'
    num_layers and num_single_layers). `guidance` is the guidance scale of a guidance-distilled model, as
    diffusers takes it (3.5, say; embedded as guidance * 1000 like t): needed exactly when guidance_embeds.
    Routing and REPA's capture (t2ijax/models/stack.py) index the blocks in that order and act on the image
    tokens only.
    """

    pooled_projection_dim: int = 768
    double_blocks: int = 6  # of depth; the rest are single-stream (FLUX.1: 19 of 57)
    mlp_ratio: float = 4.0  # diffusers' PixArt, SD3 and Flux, and U-ViT's
    axes_dim: Sequence[int] = (16, 56, 56)
    theta: float = 10000.0
    guidance_embeds: bool = False

    def _init_conditioning(self, x, text, pooled, guidance):
        """Init needs only shapes: a missing pooled vector or guidance scale is zeros there (the error, if it
        is one, comes at apply)."""
        if pooled is None and self.pooled_projection_dim != self.context_in_dim:
            pooled = jnp.zeros((x.shape[0], self.pooled_projection_dim), text.dtype)
        if self.guidance_embeds and guidance is None:
            guidance = jnp.zeros((x.shape[0],), jnp.float32)
        return pooled, guidance

    def _check_config(self, x, pooled, guidance):
        self._check_common(x)
        if len(self.axes_dim) != 3 or sum(self.axes_dim) != self.head_dim or any(d % 2 for d in self.axes_dim):
            raise ValueError(f"axes_dim {tuple(self.axes_dim)} must be three even sizes summing to head_dim "
                             f"{self.head_dim}")
        if not 0 <= self.double_blocks <= self.depth:
            raise ValueError(f"double_blocks {self.double_blocks} must be within 0..depth ({self.depth})")
        if pooled is None and self.pooled_projection_dim != self.context_in_dim:
            raise ValueError(f"no pooled text vector given: the text's mean can stand in for one only when "
                             f"pooled_projection_dim ({self.pooled_projection_dim}) equals context_in_dim "
                             f"({self.context_in_dim}); pass pooled=[B, {self.pooled_projection_dim}]")
        if self.guidance_embeds and guidance is None:
            raise ValueError("this Flux embeds a guidance scale (guidance_embeds): pass guidance=[B] floats")
        if not self.guidance_embeds and guidance is not None:
            raise ValueError("guidance given to a Flux without guidance_embeds")

    def _conditioning(self, t, text, text_mask, pooled, guidance):
        """temb: the embedded timestep (and guidance) plus the projected pooled text vector."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        embed = lambda name, s: MLPEmbedder(self.hidden_size, name=name, **kw)(
            timestep_embedding(s.astype(jnp.float32) * TIME_FACTOR, 256))
        vec = embed("timestep_embedder", t)
        if self.guidance_embeds:
            vec = vec + embed("guidance_embedder", guidance)
        if pooled is None:
            pooled = masked_mean(text, text_mask)
        return vec + MLPEmbedder(self.hidden_size, name="text_embedder", **kw)(pooled)

    def _blocks(self, img, txt, vec, text_mask, rope, route_rng, grid):
        b = img.shape[0]
        stacks = ((DoubleStreamBlock, "double_blocks", 0, self.double_blocks),
                  (SingleStreamBlock, "single_blocks", self.double_blocks, self.depth))

        def run(img, txt, start, end, rope):
            key_mask = jnp.concatenate([text_mask, jnp.ones((b, img.shape[1]), bool)], axis=1)
            carry = (img, txt)
            for block, name, first, stop in stacks:  # the part of start..end-1 in each stack
                lo, hi = max(start, first) - first, min(end, stop) - first
                if lo >= hi:
                    continue
                if self.is_initializing():
                    carry = self.init_blocks(block, self.block_fields(), name, hi, carry, vec, key_mask, rope)
                else:
                    carry = self.apply_blocks(block(**self.block_fields()), name, lo, hi, carry, vec, key_mask, rope)
            return carry

        return self.routed_blocks(img, txt, rope, route_rng, grid, run, self.depth)[0]

    @nn.compact
    def __call__(self, x, t, text, text_mask, route_rng=None, pooled=None, guidance=None):
        if self.is_initializing():
            pooled, guidance = self._init_conditioning(x, text, pooled, guidance)
        self._check_config(x, pooled, guidance)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        _, h, w, c = x.shape
        p = self.patch_size
        grid = (h // p, w // p)
        text_mask = text_mask.astype(bool)

        img = Dense(self.hidden_size, ("conv_in", "embed"), name="x_embedder", **kw)(patchify(x, p).astype(self.dtype))
        txt = Dense(self.hidden_size, (None, "embed"), name="context_embedder", **kw)(text.astype(self.dtype))
        vec = self._conditioning(t, text, text_mask, pooled, guidance)
        positions = grid_positions(*grid)  # Flux's image ids (0, row, col)
        rope = rope_tables(jnp.pad(positions, ((0, 0), (1, 0))), self.axes_dim, self.theta)
        img = self._blocks(img, txt, vec, text_mask, rope, route_rng, grid)

        scale, shift = adaln_modulation(vec, 2, "norm_out", self.hidden_size, **kw)  # AdaLayerNormContinuous order
        out = Dense(c * p * p, ("embed", "conv_in"), zero_init=True, name="proj_out", **kw)(
            modulate(img, shift, scale, self.dtype))
        return unpatchify(out, p, h, w).astype(x.dtype)

"""PRX denoiser (Photoroom): single-stream transformer whose image tokens attend over
[text K/V ‖ image K/V]. Numerically equal to diffusers' PRXTransformer2DModel.

Initialisation: xavier-uniform kernels and zero biases; the adaLN modulations and the
final projection start at zero (adaLN-Zero), so a fresh model predicts 0.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.models.layers import (Dense, RMSNorm, apply_rope, axial_rope, layer_norm, masked_attention,
                                  normalized_rope_step, patchify, timestep_embedding, unpatchify)
from t2ijax.models.stack import TOKENS, Block, Denoiser
from t2ijax.models.vision.resize import resize
from t2ijax.registry import names

POS_EMBEDS = names("model.pos_embed")


def _modulate(x, shift, scale, dtype):
    return ((1 + scale) * layer_norm(x) + shift).astype(dtype)


class MLPEmbedder(nn.Module):
    """Linear-SiLU-Linear from a sinusoidal embedding to the hidden size."""

    hidden_size: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Dense(self.hidden_size, (None, "mlp"), name="in_layer", **kw)(x.astype(self.dtype))
        return Dense(self.hidden_size, ("mlp", "embed"), name="out_layer", **kw)(nn.silu(x))


class LearnedPositions(nn.Module):
    """A learned [grid, grid, hidden] table, resized bilinearly to a token grid: [grid_h * grid_w, hidden]."""

    grid: int
    hidden_size: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, grid_h: int, grid_w: int):
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, None, "embed"))
        table = self.param("table", init, (self.grid, self.grid, self.hidden_size), self.param_dtype)
        return resize(table, (grid_h, grid_w), "bilinear").reshape(grid_h * grid_w, self.hidden_size)


class Attention(nn.Module):
    """Image queries over [text K/V ‖ image K/V].

    RMSNorm on image q/k and on text k; RoPE on image q/k only (none when rope_cos is None).
    """

    num_heads: int
    head_dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: str = "xla"

    @nn.compact
    def __call__(self, img, txt, key_mask, rope_cos, rope_sin):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = lambda name: RMSNorm(eps=1e-6, axis_name="kv", name=name, **kw)
        heads = (self.num_heads, self.head_dim)

        qkv = Dense((3, *heads), ("embed", None, "heads", "kv"), use_bias=False,
                     name="img_qkv", **kw)(img)
        rope = (lambda x: x) if rope_cos is None else (lambda x: apply_rope(x, rope_cos, rope_sin))
        q = rope(norm("norm_q")(qkv[:, :, 0]))
        k = rope(norm("norm_k")(qkv[:, :, 1]))
        txt_kv = Dense((2, *heads), ("embed", None, "heads", "kv"), use_bias=False,
                        name="txt_kv", **kw)(txt)
        k = jnp.concatenate([norm("norm_added_k")(txt_kv[:, :, 0]), k], axis=1)
        v = jnp.concatenate([txt_kv[:, :, 1], qkv[:, :, 2]], axis=1)

        out = masked_attention(q, k, v, key_mask, self.attention_impl)
        return Dense(self.num_heads * self.head_dim, ("heads", "kv", "embed"), n_in=2,
                      use_bias=False, name="to_out", **kw)(out)


class PRXBlock(Block):
    """adaLN-Zero block: gated attention then gated GeGLU (tanh) MLP.

    Returns (img, None) so that nn.scan can use the image tokens as its carry.
    """


    @nn.compact
    def __call__(self, img, txt, vec, key_mask, rope_cos, rope_sin):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        img = nn.with_logical_constraint(img, TOKENS)
        # Split over fsdp only, not over tensor: mod shifts, scales and gates tokens whose embed axis is whole
        # on every tensor shard, and a tensor-split mod re-split them in every block (permutes, gathers of
        # the tokens). Constraining mod whole instead ran into XLA:CPU's collectives deadlocking on 8 devices.
        mod = Dense(6 * self.hidden_size, ("embed", None), zero_init=True, name="modulation",
                     **kw)(nn.silu(vec))
        attn_shift, attn_scale, attn_gate, mlp_shift, mlp_scale, mlp_gate = jnp.split(
            mod.astype(jnp.float32)[:, None, :], 6, axis=-1)

        attn = Attention(self.num_heads, self.hidden_size // self.num_heads,
                         attention_impl=self.attention_impl, name="attention", **kw)
        out = attn(_modulate(img, attn_shift, attn_scale, self.dtype), txt, key_mask,
                   rope_cos, rope_sin)
        img = (img + attn_gate * out).astype(self.dtype)

        h = _modulate(img, mlp_shift, mlp_scale, self.dtype)
        mlp_dim = int(self.hidden_size * self.mlp_ratio)
        gate = Dense(mlp_dim, ("embed", "mlp"), use_bias=False, name="gate_proj", **kw)(h)
        up = Dense(mlp_dim, ("embed", "mlp"), use_bias=False, name="up_proj", **kw)(h)
        out = Dense(self.hidden_size, ("mlp", "embed"), use_bias=False, name="down_proj",
                     **kw)(nn.gelu(gate, approximate=True) * up)
        img = (img + mlp_gate * out).astype(self.dtype)
        return nn.with_logical_constraint(img, TOKENS), None


class FinalLayer(nn.Module):
    """adaLN (shift, scale) on a plain LayerNorm, then a linear map to patch features."""

    hidden_size: int
    out_features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, img, vec):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        mod = Dense(2 * self.hidden_size, ("embed", None), zero_init=True,  # as PRXBlock's modulation
                     name="adaLN_modulation", **kw)(nn.silu(vec))
        shift, scale = jnp.split(mod.astype(jnp.float32)[:, None, :], 2, axis=-1)
        return Dense(self.out_features, ("embed", "conv_in"), zero_init=True, name="linear",
                      **kw)(_modulate(img, shift, scale, self.dtype))


class PRX(Denoiser):
    """PRX text-to-image denoiser; fields mirror diffusers' PRXTransformer2DModel config.

    __call__(x [B,H,W,C] NHWC, t [B] in [0,1] (1 = noise), text [B,L,context_in_dim],
    text_mask [B,L] bool, True = real token, route_rng) -> [B,H,W,C]. Routing and REPA's capture:
    t2ijax/models/stack.py.

    Positions (pos_embed): rope_2d rotates q/k by integer patch indices (diffusers' PRX);
    rope_2d_normalized scales them so that every image spans the area of a pos_grid x pos_grid grid;
    learned_absolute adds a learned pos_grid x pos_grid table, resized bilinearly to the token grid,
    to the image tokens and uses no RoPE. The image's latent height and width condition the model
    through the timestep vector (resolution_embeds, diffusers' name) and/or as two extra text tokens
    (resolution_tokens).
    """

    axes_dim: Sequence[int] | None = None  # None: [head_dim // 2, head_dim // 2]
    theta: float = 10000.0
    time_factor: float = 1000.0
    time_max_period: float = 10000.0
    bottleneck_size: int | None = None
    resolution_embeds: bool = False
    resolution_tokens: bool = False
    pos_embed: str = "rope_2d"  # one of POS_EMBEDS
    pos_grid: int = 0  # reference token grid side of rope_2d_normalized and learned_absolute

    @property
    def rope_axes_dim(self) -> tuple[int, ...]:
        if self.axes_dim is None:
            return (self.head_dim // 2, self.head_dim // 2)
        return tuple(self.axes_dim)

    def _check_config(self, x):
        self._check_common(x)
        if len(self.rope_axes_dim) != 2 or sum(self.rope_axes_dim) != self.head_dim:
            raise ValueError(f"axes_dim {self.rope_axes_dim} must be two sizes summing to "
                             f"head_dim {self.head_dim}")
        if self.pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed {self.pos_embed!r} not in {', '.join(POS_EMBEDS)}")
        if self.pos_embed != "rope_2d" and self.pos_grid <= 0:
            raise ValueError(f"pos_embed {self.pos_embed} needs pos_grid > 0, got {self.pos_grid}")

    def _blocks(self, img, txt, vec, text_mask, rope_cos, rope_sin, route_rng, grid):
        b = img.shape[0]
        key_mask = lambda length: jnp.concatenate([text_mask.astype(bool), jnp.ones((b, length), bool)], axis=1)

        def run(img, state, start, end, rope):
            cos, sin = (None, None) if rope is None else rope
            args = (txt, vec, key_mask(img.shape[1]), cos, sin)
            if self.is_initializing():
                return self.init_blocks(PRXBlock, self.block_fields(), "blocks", self.depth, img, *args), state
            return self.apply_blocks(PRXBlock(**self.block_fields()), "blocks", start, end, img, *args), state

        rope = None if rope_cos is None else (rope_cos, rope_sin)
        return self.routed_blocks(img, None, rope, route_rng, grid, run, self.depth)[0]

    def _positions(self, img, grid):
        """(img, rope_cos, rope_sin): the tokens with the learned table added and no RoPE, or the tokens
        as they are and the RoPE tables of pos_embed."""
        if self.pos_embed == "learned_absolute":
            table = LearnedPositions(self.pos_grid, self.hidden_size, self.param_dtype, name="pos_embed")(*grid)
            return img + table.astype(self.dtype)[None], None, None
        step = normalized_rope_step(*grid, self.pos_grid) if self.pos_embed == "rope_2d_normalized" else 1.0
        return img, *axial_rope(*grid, self.rope_axes_dim, self.theta, step)

    def _size_embedding(self, size: int, batch: int):
        return timestep_embedding(jnp.full((batch,), size, jnp.float32), 128, max_period=self.time_max_period)

    @nn.compact
    def __call__(self, x, t, text, text_mask, route_rng=None):
        self._check_config(x)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, h, w, c = x.shape
        p = self.patch_size

        img = patchify(x, p).astype(self.dtype)
        img_in_axis = "conv_in"
        if self.bottleneck_size is not None:
            img = Dense(self.bottleneck_size, ("conv_in", "mlp"), name="img_in_bottleneck",
                         **kw)(img)
            img_in_axis = "mlp"
        img = Dense(self.hidden_size, (img_in_axis, "embed"), name="img_in", **kw)(img)
        img, rope_cos, rope_sin = self._positions(img, (h // p, w // p))
        txt = Dense(self.hidden_size, (None, "embed"), name="txt_in", **kw)(
            text.astype(self.dtype))
        if self.resolution_tokens:  # one embedder per side: text keys have no position, so 32x64 would look like 64x32
            sides = [MLPEmbedder(self.hidden_size, name=f"{side}_token", **kw)(self._size_embedding(size, b))
                     for side, size in (("height", h), ("width", w))]
            txt = jnp.concatenate([txt, jnp.stack(sides, axis=1).astype(txt.dtype)], axis=1)
            text_mask = jnp.concatenate([text_mask.astype(bool), jnp.ones((b, 2), bool)], axis=1)
        txt = nn.with_logical_constraint(txt, TOKENS)

        vec = MLPEmbedder(self.hidden_size, name="time_in", **kw)(timestep_embedding(
            t, 256, scale=self.time_factor, max_period=self.time_max_period))
        if self.resolution_embeds:
            vec = vec + MLPEmbedder(self.hidden_size, name="resolution_embedder", **kw)(
                jnp.concatenate([self._size_embedding(h, b), self._size_embedding(w, b)], axis=-1))

        img = self._blocks(img, txt, vec, text_mask, rope_cos, rope_sin, route_rng, (h // p, w // p))

        out = FinalLayer(self.hidden_size, c * p * p, name="final_layer", **kw)(img, vec)
        return unpatchify(out, p, h, w).astype(x.dtype)


def count_params(params) -> int:
    """Number of scalars in a (boxed or plain) param tree."""
    return sum(leaf.size for leaf in jax.tree.leaves(nn.unbox(params)))

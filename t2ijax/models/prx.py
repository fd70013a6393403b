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
from t2ijax.models.vision.resize import resize
from t2ijax.registry import names
from t2ijax.techniques import repa, routing

REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
TOKENS = ("batch", "length", "embed")
POS_EMBEDS = names("model.pos_embed")
assert {*REMAT_POLICIES, "none"} == set(names("model.remat_policy")), "registry.NAMES differs"


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


class PRXBlock(nn.Module):
    """adaLN-Zero block: gated attention then gated GeGLU (tanh) MLP.

    Returns (img, None) so that nn.scan can use the image tokens as its carry.
    """

    hidden_size: int
    num_heads: int
    mlp_ratio: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: str = "xla"

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


class PRX(nn.Module):
    """PRX text-to-image denoiser; fields mirror diffusers' PRXTransformer2DModel config.

    __call__(x [B,H,W,C] NHWC, t [B] in [0,1] (1 = noise), text [B,L,context_in_dim],
    text_mask [B,L] bool, True = real token, route_rng) -> [B,H,W,C].

    Token routing (t2ijax/techniques/routing.py) over blocks route_start..route_end (inclusive):
    with a `route_rng`, each example sends a random `route_rate` of its image tokens past the range.
    TREAD puts them back unchanged after it; SPRINT fills their places with a learned mask token
    and fuses [tokens entering the range || tokens leaving it] with a linear layer, with or
    without a `route_rng`. Without one, TREAD is the plain model.

    Positions (pos_embed): rope_2d rotates q/k by integer patch indices (diffusers' PRX);
    rope_2d_normalized scales them so that every image spans the area of a pos_grid x pos_grid grid;
    learned_absolute adds a learned pos_grid x pos_grid table, resized bilinearly to the token grid,
    to the image tokens and uses no RoPE. The image's latent height and width condition the model
    through the timestep vector (resolution_embeds, diffusers' name) and/or as two extra text tokens
    (resolution_tokens).

    capture_layer >= 0 sows the image tokens leaving that block into "intermediates" ("hidden",
    and "hidden_tokens": the token indices they hold, fewer than all inside a routed range), and
    with a repa_projector their projection to repa_dim features ("repa").
    """

    in_channels: int = 16
    patch_size: int = 2
    context_in_dim: int = 2304
    hidden_size: int = 1792
    mlp_ratio: float = 3.5
    num_heads: int = 28
    depth: int = 16
    axes_dim: Sequence[int] | None = None  # None: [head_dim // 2, head_dim // 2]
    theta: float = 10000.0
    time_factor: float = 1000.0
    time_max_period: float = 10000.0
    bottleneck_size: int | None = None
    resolution_embeds: bool = False
    resolution_tokens: bool = False
    pos_embed: str = "rope_2d"  # one of POS_EMBEDS
    pos_grid: int = 0  # reference token grid side of rope_2d_normalized and learned_absolute
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str = "none"  # none | full | dots | dots_with_no_batch_dims
    scan_layers: bool = True
    attention_impl: str = "xla"  # "xla", "cudnn" on GPU, "splash" on TPU
    routing: str = "none"  # none | tread | sprint
    route_start: int = 0
    route_end: int = 0
    route_rate: float = 0.5
    capture_layer: int = -1
    repa_projector: str = "none"  # none | mlp | conv | attention (t2ijax/techniques/repa.py)
    repa_dim: int = 0
    repa_heads: int = 4

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rope_axes_dim(self) -> tuple[int, ...]:
        if self.axes_dim is None:
            return (self.head_dim // 2, self.head_dim // 2)
        return tuple(self.axes_dim)

    def _check_config(self, x):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by "
                             f"num_heads {self.num_heads}")
        if len(self.rope_axes_dim) != 2 or sum(self.rope_axes_dim) != self.head_dim:
            raise ValueError(f"axes_dim {self.rope_axes_dim} must be two sizes summing to "
                             f"head_dim {self.head_dim}")
        if self.remat_policy != "none" and self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r} not in "
                             f"none, {', '.join(REMAT_POLICIES)}")
        if self.pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed {self.pos_embed!r} not in {', '.join(POS_EMBEDS)}")
        if self.pos_embed != "rope_2d" and self.pos_grid <= 0:
            raise ValueError(f"pos_embed {self.pos_embed} needs pos_grid > 0, got {self.pos_grid}")
        if x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
            raise ValueError(f"image {x.shape[1:3]} not divisible by patch_size {self.patch_size}")

    def _block_kw(self) -> dict:
        return dict(hidden_size=self.hidden_size, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
                    dtype=self.dtype, param_dtype=self.param_dtype, attention_impl=self.attention_impl)

    def _init_blocks(self, img, *args):
        """Creates the block params (stacked over a leading "layers" axis when scanned)."""
        block_cls = PRXBlock
        if self.scan_layers:
            stack = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=(nn.broadcast,) * len(args), length=self.depth,
                            metadata_params={nn.PARTITION_NAME: "layers"})
            return stack(name="blocks", **self._block_kw())(img, *args)[0]
        for i in range(self.depth):
            img, _ = block_cls(name=f"blocks_{i}", **self._block_kw())(img, *args)
        return img

    def _run_blocks(self, img, start: int, end: int, *args):
        """Blocks start..end-1 applied to `img` with their params sliced from this module's."""
        if start == end:
            return img
        block = PRXBlock(**self._block_kw())
        layer = lambda h, params: block.apply({"params": params}, h, *args)[0]
        if self.remat_policy != "none":
            layer = jax.checkpoint(layer, policy=REMAT_POLICIES[self.remat_policy],
                                   prevent_cse=not self.scan_layers)
        params = self.variables["params"]
        if self.scan_layers:
            stacked = jax.tree.map(lambda p: p[start:end], params["blocks"])
            return jax.lax.scan(lambda h, p: (layer(h, p), None), img, stacked)[0]
        for i in range(start, end):
            img = layer(img, params[f"blocks_{i}"])
        return img

    def _capture(self, img, tokens, grid):
        self.sow("intermediates", "hidden", img)
        self.sow("intermediates", "hidden_tokens", tokens)
        if self.repa_projector != "none":
            projector = repa.make_projector(self.repa_projector, self.repa_dim, self.repa_heads)
            self.sow("intermediates", "repa", projector(img, tokens, grid))

    def _blocks(self, img, txt, vec, text_mask, rope_cos, rope_sin, route_rng, grid):
        """The block stack, split where tokens are routed, restored or captured."""
        sprint = self.routing == "sprint"
        if sprint:
            mask_token = self.param("sprint_mask_token", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                                    (self.hidden_size,), self.param_dtype)
            fuse = Dense(self.hidden_size, ("mlp", "embed"), name="sprint_fuse", dtype=self.dtype,
                         param_dtype=self.param_dtype)
        b, n = img.shape[:2]
        key_mask = lambda length: jnp.concatenate([text_mask.astype(bool), jnp.ones((b, length), bool)], axis=1)
        tokens = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
        if self.is_initializing():
            img = self._init_blocks(img, txt, vec, key_mask(n), rope_cos, rope_sin)
            if self.capture_layer >= 0:
                self._capture(img, tokens, grid)
            return fuse(jnp.concatenate([img, img], axis=-1)) if sprint else img

        routed = self.routing != "none" and (sprint or route_rng is not None)
        start, stop = (self.route_start, self.route_end + 1) if routed else (None, None)
        capture = self.capture_layer + 1 if self.capture_layer >= 0 else None
        cuts = sorted({0, self.depth, start, stop, capture} - {None})
        kept, dense, cos, sin = None, None, rope_cos, rope_sin
        for a, z in zip(cuts, cuts[1:]):
            if a == start:
                dense = img
                if route_rng is not None:
                    kept = routing.choose_kept(route_rng, b, n, self.route_rate)
                    img = routing.gather_tokens(img, kept)
                    if rope_cos is not None:
                        cos, sin = rope_cos[kept], rope_sin[kept]
            img = self._run_blocks(img, a, z, txt, vec, key_mask(img.shape[1]), cos, sin)
            if z == capture:  # before the routed range hands its tokens back, as PRX's REPA hook sees them
                self._capture(img, tokens if kept is None else kept, grid)
            if z == stop:
                if sprint:
                    deep = img if kept is None else routing.scatter_tokens(
                        jnp.broadcast_to(mask_token.astype(img.dtype), dense.shape), kept, img)
                    img = fuse(jnp.concatenate([dense, deep], axis=-1))
                else:
                    img = routing.scatter_tokens(dense, kept, img)
                kept, cos, sin = None, rope_cos, rope_sin
        return img

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

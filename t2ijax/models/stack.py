"""What every denoiser's block stack shares: layers scanned or unrolled with a remat policy, and the
training techniques that act on its image tokens (REPA's capture, TREAD's and SPRINT's routing).

A backbone subclasses `Denoiser`, creates its blocks with `init_blocks` and runs a slice of them with
`apply_blocks`; `routed_blocks` runs the whole stack through a backbone's `run(img, state, start,
end, rope)`, cutting it where tokens are routed, restored or captured. `state` is whatever else the
blocks carry beside the image tokens (the text stream, the time vector): it is never routed.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.models.layers import Dense
from t2ijax.registry import names
from t2ijax.techniques import repa, routing

REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
TOKENS = ("batch", "length", "embed")
assert {*REMAT_POLICIES, "none"} == set(names("model.remat_policy")), "registry.NAMES differs"


class Block(nn.Module):
    """The fields of every backbone's transformer block; `Denoiser.block_fields()` fills them."""

    hidden_size: int
    num_heads: int
    mlp_ratio: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: str = "xla"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class Denoiser(nn.Module):
    """Base of the backbones: the technique fields, and block stacks that honour them.

    The fields every backbone has come first (PRX-small's sizes by default), then the techniques'.
    Token routing over blocks route_start..route_end (inclusive): with a `route_rng`, each example
    sends a random `route_rate` of its image tokens past the range. TREAD puts them back unchanged after
    it; SPRINT fills their places with a learned mask token and fuses [tokens entering the range ||
    tokens leaving it] with a linear layer, with or without a `route_rng`. Without one, TREAD is the plain
    model. capture_layer >= 0 sows the image tokens leaving that block into "intermediates" ("hidden",
    and "hidden_tokens": the token indices they hold, fewer than all inside a routed range), and with a
    repa_projector their projection to repa_dim features ("repa").
    """

    in_channels: int = 16
    patch_size: int = 2
    context_in_dim: int = 2304
    hidden_size: int = 1792
    num_heads: int = 28
    depth: int = 16
    mlp_ratio: float = 3.5
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str = "none"  # none | full | dots | dots_with_no_batch_dims
    scan_layers: bool = True
    attention_impl: str = "xla"  # "xla", "flash", "cudnn" on GPU, "splash" on TPU
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

    def block_fields(self, **extra) -> dict:
        """The Block fields of this model's blocks, and a block class's own `extra` ones."""
        return dict(hidden_size=self.hidden_size, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
                    dtype=self.dtype, param_dtype=self.param_dtype, attention_impl=self.attention_impl, **extra)

    def _check_common(self, x):
        """ValueErrors for what every backbone needs of its fields and of the image x [B, H, W, C]."""
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if self.remat_policy != "none" and self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r} not in none, {', '.join(REMAT_POLICIES)}")
        if x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
            raise ValueError(f"image {x.shape[1:3]} not divisible by patch_size {self.patch_size}")

    def init_blocks(self, block: type[nn.Module], kw: dict, name: str, count: int, carry, *args):
        """Creates `count` blocks' params under `name` (stacked over a leading "layers" axis when scanned,
        else name_0, name_1, ...) by running them on `carry`; a block maps (carry, *args) -> (carry, None)."""
        if self.scan_layers:
            stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=(nn.broadcast,) * len(args), length=count,
                            metadata_params={nn.PARTITION_NAME: "layers"})
            return stack(name=name, **kw)(carry, *args)[0]
        for i in range(count):
            carry, _ = block(name=f"{name}_{i}", **kw)(carry, *args)
        return carry

    def apply_blocks(self, block: nn.Module, name: str, start: int, end: int, carry, *args):
        """Blocks start..end-1 of the stack `name` applied to `carry`, their params sliced from this module's."""
        if start == end:
            return carry
        layer = lambda c, params: block.apply({"params": params}, c, *args)[0]
        if self.remat_policy != "none":
            layer = jax.checkpoint(layer, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=not self.scan_layers)
        params = self.variables["params"]
        if self.scan_layers:
            stacked = jax.tree.map(lambda p: p[start:end], params[name])
            return jax.lax.scan(lambda c, p: (layer(c, p), None), carry, stacked)[0]
        for i in range(start, end):
            carry = layer(carry, params[f"{name}_{i}"])
        return carry

    def _capture(self, img, tokens, grid):
        self.sow("intermediates", "hidden", img)
        self.sow("intermediates", "hidden_tokens", tokens)
        if self.repa_projector != "none":
            projector = repa.make_projector(self.repa_projector, self.repa_dim, self.repa_heads)
            self.sow("intermediates", "repa", projector(img, tokens, grid))

    def routed_blocks(self, img, state, rope, route_rng, grid, run, num_blocks: int):
        """(img, state) after blocks 0..num_blocks-1, run by `run(img, state, start, end, rope)` on the
        segments between the cuts that routing and capture need. img [B, N, D] are the image tokens, rope
        their (cos, sin) tables [N, r] or None: routed tokens take their own rows with them."""
        sprint = self.routing == "sprint"
        if sprint:
            zeros = nn.with_logical_partitioning(nn.initializers.zeros, ("embed",))
            mask_token = self.param("sprint_mask_token", zeros, (self.hidden_size,), self.param_dtype)
            fuse = Dense(self.hidden_size, ("mlp", "embed"), name="sprint_fuse", dtype=self.dtype,
                         param_dtype=self.param_dtype)
        b, n = img.shape[:2]
        tokens = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
        if self.is_initializing():
            img, state = run(img, state, 0, num_blocks, rope)
            if self.capture_layer >= 0:
                self._capture(img, tokens, grid)
            return (fuse(jnp.concatenate([img, img], axis=-1)) if sprint else img), state

        routed = self.routing != "none" and (sprint or route_rng is not None)
        start, stop = (self.route_start, self.route_end + 1) if routed else (None, None)
        capture = self.capture_layer + 1 if self.capture_layer >= 0 else None
        cuts = sorted({0, num_blocks, start, stop, capture} - {None})
        kept, dense, segment_rope = None, None, rope
        for a, z in zip(cuts, cuts[1:]):
            if a == start:
                dense = img
                if route_rng is not None:
                    kept = routing.choose_kept(route_rng, b, n, self.route_rate)
                    img = routing.gather_tokens(img, kept)
                    if rope is not None:
                        segment_rope = tuple(table[kept] for table in rope)
            img, state = run(img, state, a, z, segment_rope)
            if z == capture:  # before the routed range hands its tokens back, as PRX's REPA hook sees them
                self._capture(img, tokens if kept is None else kept, grid)
            if z == stop:
                if sprint:
                    deep = img if kept is None else routing.scatter_tokens(
                        jnp.broadcast_to(mask_token.astype(img.dtype), dense.shape), kept, img)
                    img = fuse(jnp.concatenate([dense, deep], axis=-1))
                else:
                    img = routing.scatter_tokens(dense, kept, img)
                kept, segment_rope = None, rope
        return img, state

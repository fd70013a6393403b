"""Small transformer pieces shared by the denoisers: norms, embeddings, patching, attention."""

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class Dense(nn.Module):
    """y = x . W (+ b) over the last `n_in` axes of x; W and b carry logical axis names.

    The leading (batch, token) axes are merged into one around a 2-D matmul: XLA's CPU
    backend lays out the backward-pass products of 2-D matmuls far better (about 2x on the
    MLP, and the 20M bench model's train step takes 6.3 s flattened against 8.7 s with
    the kernel whole). The kernel is flattened only where that keeps its sharding: a mesh
    axis splitting a kernel axis after the first of its input or output group (img_qkv's
    heads, behind the 3) would make XLA gather it whole; such a kernel is contracted at
    its full shape. It is created at its full shape (flax's DenseGeneral creates it flat,
    which breaks logical sharding constraints under a mesh); the default xavier-uniform
    uses the flattened fan-in and fan-out.
    """

    features: int | tuple[int, ...]
    axes: tuple[str | None, ...]  # logical names of the kernel axes: inputs then outputs
    n_in: int = 1
    use_bias: bool = True
    zero_init: bool = False
    kernel_init: Callable | None = None  # replaces the default (xavier-uniform) initializer
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        in_shape = x.shape[x.ndim - self.n_in:]
        n_out = len(features)
        if self.zero_init:
            init = nn.initializers.zeros
        elif self.kernel_init is not None:
            init = self.kernel_init
        else:
            init = nn.initializers.variance_scaling(
                1.0, "fan_avg", "uniform", in_axis=tuple(range(self.n_in)),
                out_axis=tuple(range(self.n_in, self.n_in + n_out)))
        kernel = self.param("kernel", nn.with_logical_partitioning(init, self.axes),
                            in_shape + features, self.param_dtype)
        lead = x.shape[:x.ndim - self.n_in]
        x = x.reshape(-1, *in_shape).astype(self.dtype)
        if _flattening_keeps_sharding(self.axes[:self.n_in]) and _flattening_keeps_sharding(self.axes[self.n_in:]):
            y = jnp.dot(x.reshape(x.shape[0], -1), kernel.reshape(math.prod(in_shape), -1).astype(self.dtype))
        else:
            y = jax.lax.dot_general(x, kernel.astype(self.dtype), ((tuple(range(1, self.n_in + 1)),
                                                                     tuple(range(self.n_in))), ((), ())))
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                   self.axes[self.n_in:]),
                              features, self.param_dtype)
            y = y + bias.reshape(y.shape[1:]).astype(self.dtype)
        return y.reshape(lead + features)


def _flattening_keeps_sharding(axes: tuple[str | None, ...]) -> bool:
    """Whether the mesh being traced for (none on a single device) splits no kernel axis but the first of
    `axes`: merged into one, they then keep their split, which is the first one's."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return True
    ways = lambda spec: math.prod(mesh.shape[a] for a in ((spec,) if isinstance(spec, str) else spec or ()))
    return all(ways(spec) == 1 for spec in nn.logical_to_mesh_axes(axes)[1:])


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """LayerNorm without scale or bias, computed in fp32, returned in fp32."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """adaLN: (1 + scale) * layer_norm(x) + shift, computed in fp32 and returned in `dtype`."""
    return ((1 + scale) * layer_norm(x) + shift).astype(dtype)


def adaln_modulation(vec: jax.Array, n: int, name: str, hidden_size: int, **kw) -> list[jax.Array]:
    """n adaLN vectors [B, 1, hidden_size] (fp32) from the conditioning vector [B, D]: one zero-initialised
    Dense (adaLN-Zero) named `name` in the calling module, so call it inside a compact method. Its kernel is
    split over fsdp only, not over tensor: the vectors shift, scale and gate tokens whose embed axis is whole on
    every tensor shard, and a tensor-split one re-splits them in every block (PRXBlock's modulation)."""
    mod = Dense(n * hidden_size, ("embed", None), zero_init=True, name=name, **kw)(nn.silu(vec))
    return jnp.split(mod.astype(jnp.float32)[:, None, :], n, axis=-1)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x [B, L, D] over the tokens where mask [B, L] is True, fp32 [B, D] (zeros where none is)."""
    weights = mask.astype(jnp.float32)[..., None]
    return (x.astype(jnp.float32) * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)


class FeedForward(nn.Module):
    """Linear -> GELU (tanh) -> Linear, both with biases (diffusers' FeedForward "gelu-approximate": DiT-style
    MLPs of SD3 and Flux)."""

    hidden_size: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Dense(self.mlp_dim, ("embed", "mlp"), name="fc1", **kw)(x)
        return Dense(self.hidden_size, ("mlp", "embed"), name="fc2", **kw)(nn.gelu(x, approximate=True))


class RMSNorm(nn.Module):
    """RMSNorm over the last axis with a learned scale; statistics and scaling in fp32."""

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,))
        scale = self.param("scale", init, (x.shape[-1],), self.param_dtype)
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + self.eps)
        return (x * scale.astype(jnp.float32)).astype(self.dtype)


def timestep_embedding(t: jax.Array, dim: int = 256, scale: float = 1.0,
                       max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding [cos | sin] of `scale * t`, fp32, shape [B, dim].

    Same numbers as diffusers' get_timestep_embedding with flip_sin_to_cos=True and
    downscale_freq_shift=0 (frequencies exp(-log(max_period) * i / half)).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = scale * (t.astype(jnp.float32)[:, None] * freqs[None, :])
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def sincos_2d(rows: np.ndarray, cols: np.ndarray, dim: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embeddings [len(rows) * len(cols), dim] (fp32) of a row-major token grid
    whose rows sit at positions `rows` and columns at `cols`, as diffusers' get_2d_sincos_pos_embed computes
    them (PixArt, SD3): the first dim/2 features encode the column, the last the row, each [sin | cos];
    frequencies and products in fp64 (diffusers gives the positions in fp32)."""
    if dim % 4:
        raise ValueError(f"hidden_size {dim} must be divisible by 4 for 2D sin-cos positions")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def embed(positions: np.ndarray) -> np.ndarray:
        angles = np.outer(np.asarray(positions, np.float64), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    col, row = embed(cols), embed(rows)
    table = np.concatenate([np.tile(col, (len(rows), 1)), np.repeat(row, len(cols), axis=0)], axis=1)
    return table.astype(np.float32)


def grid_positions(grid_h: int, grid_w: int, step: float = 1.0) -> jax.Array:
    """(row, column) x `step` of each token of a grid_h x grid_w grid, row-major: [grid_h * grid_w, 2] fp32."""
    rows, cols = jnp.meshgrid(jnp.arange(grid_h, dtype=jnp.float32) * step,
                              jnp.arange(grid_w, dtype=jnp.float32) * step, indexing="ij")
    return jnp.stack([rows.reshape(-1), cols.reshape(-1)], axis=-1)


def rope_tables(positions: jax.Array, axes_dim: Sequence[int], theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin tables [N, sum(axes_dim) // 2] for RoPE over n position axes (fp32).

    positions [N, n] holds each token's position along the n axes; the first axes_dim[0] // 2
    rotation pairs follow axis 0, the next axes_dim[1] // 2 axis 1, and so on.
    """
    angles = []
    for pos, dim in zip(positions.T, axes_dim, strict=True):
        omega = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
        angles.append(pos[:, None] * jnp.asarray(omega, jnp.float32)[None, :])
    angles = jnp.concatenate(angles, axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def axial_rope(grid_h: int, grid_w: int, axes_dim: Sequence[int], theta: float,
               step: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """rope_tables for 2D axial RoPE over a row-major grid_h x grid_w token grid: the rows follow
    axes_dim[0], the columns axes_dim[1]; a token's position is its (row, column) index times `step`."""
    return rope_tables(grid_positions(grid_h, grid_w, step), axes_dim, theta)


def normalized_rope_step(grid_h: int, grid_w: int, reference: int) -> float:
    """The position step that makes a grid_h x grid_w token grid span the area of a reference x
    reference one: 1 on the reference grid, 1/2 on a grid twice its side (unseen sizes interpolate)."""
    return reference / math.sqrt(grid_h * grid_w)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates adjacent feature pairs of x [B, L, heads, head_dim] by [L, head_dim/2] angles, or by
    [B, L, head_dim/2] when each example keeps its own tokens (token routing)."""
    xf = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    cos, sin = cos[..., None, :], sin[..., None, :]
    out = jnp.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)


def patchify(x: jax.Array, p: int) -> jax.Array:
    """NHWC image -> [B, (H/p)*(W/p), C*p*p] tokens, row-major over patches.

    Per-token features are ordered (c, p, q), as diffusers' img2seq orders them on the
    NCHW tensor, so PRX checkpoints load without permuting img_in.
    """
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: jax.Array, p: int, h: int, w: int, channels_last: bool = False) -> jax.Array:
    """Inverse of patchify: [B, (h/p)*(w/p), C*p*p] -> NHWC [B, h, w, C].

    channels_last: per-token features ordered (p, q, c), as the proj_out of diffusers' DiT, PixArt and
    SD3 writes them ("nhwpqc->nchpwq"), rather than patchify's (c, p, q).
    """
    b, _, d = tokens.shape
    c = d // (p * p)
    if channels_last:
        x = tokens.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    else:
        x = tokens.reshape(b, h // p, w // p, c, p, p).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h, w, c)


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array,
                     implementation: str = "xla") -> jax.Array:
    """Attention of q [B, Lq, heads, D] over the keys [B, Lk, heads, D] where key_mask [B, Lk].

    "xla" is plain einsums with fp32 logits and softmax; "flash" the same arithmetic tile by tile over the
    keys with an online softmax and a recomputing backward pass (t2ijax/models/flash.py; fastest on CPU);
    "cudnn" is jax.nn.dot_product_attention's fused GPU kernel (bf16/fp16 inputs); "splash" the Pallas TPU
    kernel (t2ijax/models/splash.py).
    """
    if implementation == "flash":
        from t2ijax.models.flash import flash_attention

        return flash_attention(q, k, v, key_mask)
    if implementation == "splash":
        from t2ijax.models.splash import splash_attention

        return splash_attention(q, k, v, key_mask)
    if implementation == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, mask=key_mask[:, None, None, :],
                                            implementation="cudnn")
    # Heads ahead of tokens: XLA's CPU batched matmuls are far faster on [B, heads, L, D] operands (the
    # 20M bench model's forward at batch 32: 1.79 s -> 1.35 s). Measured on the CPU only.
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = jnp.where(key_mask[:, None, None, :], logits / math.sqrt(q.shape[-1]), -1e30)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, v).transpose(0, 2, 1, 3)

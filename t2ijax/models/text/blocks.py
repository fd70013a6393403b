"""Pieces the text encoder families share: projections, norms, attention, MLPs, RoPE, masks.

Conventions for every family: the residual stream, norms, attention logits and softmax, and
RoPE run in float32; projections and MLPs compute in the module's `dtype`. Every parameter
names its logical axes (`vocab, embed, heads, kv, mlp`; `layers` added by `run_layers`).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.models.layers import Dense, RMSNorm

INIT = nn.initializers.normal(0.02)  # the initializer_range of every family here
NEG_INF = float(jnp.finfo(jnp.float32).min)  # masked logits, as transformers does it

ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * nn.sigmoid(1.702 * x),
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}


def check_activation(name: str, field: str) -> None:
    if name not in ACTIVATIONS:
        raise ConfigError(f"{field}={name!r} is not supported; supported: {', '.join(sorted(ACTIVATIONS))}")


def dense(features, axes, *, dtype, name, n_in: int = 1, use_bias: bool = True) -> Dense:
    return Dense(features, axes, n_in=n_in, use_bias=use_bias, kernel_init=INIT, dtype=dtype, name=name)


def embedding(rows: int, features: int, row_axis: str | None, name: str) -> nn.Embed:
    init = nn.with_logical_partitioning(INIT, (row_axis, "embed"))
    return nn.Embed(rows, features, embedding_init=init, name=name)


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps, dtype=jnp.float32, name=name,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))


def rms_norm(eps: float, name: str, axis_name: str = "embed", dtype: Any = jnp.float32) -> RMSNorm:
    return RMSNorm(eps=eps, dtype=dtype, axis_name=axis_name, name=name)


def attention_bias(attention_mask: jax.Array, causal: bool = False, window: int | None = None) -> jax.Array:
    """Additive float32 bias [B, 1, Lq | 1, Lk]: 0 where a query may attend a key, else NEG_INF.

    `window` keeps keys within that distance of the query on either side.
    """
    keep = attention_mask.astype(bool)[:, None, None, :]
    length = attention_mask.shape[-1]
    query, key = np.arange(length)[:, None], np.arange(length)[None, :]
    if causal:
        keep = keep & (key <= query)
    if window is not None:
        keep = keep & (np.abs(query - key) <= window)
    return jnp.where(keep, 0.0, NEG_INF)


def rope_tables(length: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin [L, head_dim / 2] of positions 0..L-1 (float32, frequencies as transformers)."""
    inverse_frequency = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inverse_frequency[None, :]
    return jnp.cos(angles), jnp.sin(angles)


def rotate_halves(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """RoPE on x [B, L, heads, head_dim] pairing feature i with i + head_dim / 2 (the
    Hugging Face layout, unlike layers.apply_rope's adjacent pairs)."""
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)


def attend(query, key, value, bias, scale: float, softcap: float | None = None) -> jax.Array:
    """Softmax attention of query [B, L, H, D] over key/value [B, L, H_kv, D] (H_kv divides H;
    query head h reads key/value head h // (H / H_kv)), with float32 logits and softmax."""
    groups = query.shape[2] // key.shape[2]
    key, value = jnp.repeat(key, groups, axis=2), jnp.repeat(value, groups, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32) * scale
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    probs = jax.nn.softmax(logits + bias, axis=-1).astype(value.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, value)


class SelfAttention(nn.Module):
    """Multi-head (or grouped-query) self-attention: `(x, bias, rope) -> [B, L, embed]`.

    `qk_norm_eps` adds an RMSNorm over each query and key head; `rope` is (cos, sin) or None.
    """

    num_heads: int
    head_dim: int
    num_kv_heads: int | None = None
    use_bias: bool = True
    scale: float | None = None  # None: head_dim ** -0.5
    softcap: float | None = None
    qk_norm_eps: float | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array, rope: tuple[jax.Array, jax.Array] | None = None):
        def project(heads: int, name: str) -> jax.Array:
            return dense((heads, self.head_dim), ("embed", "heads", "kv"), use_bias=self.use_bias,
                         dtype=self.dtype, name=name)(x)

        kv_heads = self.num_kv_heads or self.num_heads
        query, key, value = project(self.num_heads, "query"), project(kv_heads, "key"), project(kv_heads, "value")
        if self.qk_norm_eps is not None:
            query = rms_norm(self.qk_norm_eps, "query_norm", "kv", self.dtype)(query)
            key = rms_norm(self.qk_norm_eps, "key_norm", "kv", self.dtype)(key)
        if rope is not None:
            query, key = rotate_halves(query, *rope), rotate_halves(key, *rope)
        scale = self.head_dim**-0.5 if self.scale is None else self.scale
        attended = attend(query, key, value, bias, scale, self.softcap)
        out = dense(x.shape[-1], ("heads", "kv", "embed"), n_in=2, use_bias=self.use_bias, dtype=self.dtype,
                    name="out")
        return out(attended)


class MLP(nn.Module):
    """`down(act(up(x)))`, or `down(act(gate(x)) * up(x))` when gated."""

    intermediate_size: int
    activation: str
    gated: bool = False
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        def project(features: int, axes: tuple[str, str], name: str) -> Dense:
            return dense(features, axes, use_bias=self.use_bias, dtype=self.dtype, name=name)

        act = ACTIVATIONS[self.activation]
        hidden = project(self.intermediate_size, ("embed", "mlp"), "up")(x)
        if self.gated:
            hidden = act(project(self.intermediate_size, ("embed", "mlp"), "gate")(x)) * hidden
        else:
            hidden = act(hidden)
        return project(x.shape[-1], ("mlp", "embed"), "down")(hidden)


class TextLayer(nn.Module):
    """Base of the family blocks: `(hidden, *inputs) -> (hidden, None)`, run by `run_layers`."""

    config: Any
    dtype: Any


class TextEncoderModule(nn.Module):
    """Base of the family modules: `(input_ids [B, L], attention_mask [B, L]) -> [B, L, D] float32`,
    the hidden state after the first `num_layers` layers (all by default)."""

    config: Any
    dtype: Any = jnp.float32
    num_layers: int | None = None

    @property
    def depth(self) -> int:
        return self.config.num_hidden_layers if self.num_layers is None else self.num_layers

    @property
    def runs_every_layer(self) -> bool:
        return self.depth == self.config.num_hidden_layers

    def output(self, hidden: jax.Array, final_norm: nn.Module) -> jax.Array:
        """The model's last hidden state, after `final_norm`, when every layer ran; else `hidden`
        as it left the last layer run (as transformers' hidden_states give it)."""
        return final_norm(hidden) if self.runs_every_layer else hidden


def run_layers(layer: type[nn.Module], count: int, hidden: jax.Array, *inputs, in_axes=nn.broadcast,
               **fields) -> jax.Array:
    """`hidden` after `count` copies of `layer` run in sequence by `nn.scan` (each parameter
    gains a leading `layers` axis); unchanged, with no parameters, when count is 0.

    The layer maps `(hidden, *inputs) -> (hidden, None)`; `in_axes` says which inputs are
    per layer (0) rather than shared (nn.broadcast).
    """
    if not count:
        return hidden
    layers = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=in_axes,
                     length=count, metadata_params={nn.PARTITION_NAME: "layers"})(**fields, name="layers")
    return layers(hidden, *inputs)[0]

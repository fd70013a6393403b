"""A BERT encoder in Flax Linen whose last hidden state matches transformers' BertModel.

Inference only (no dropout). The residual stream, LayerNorms and attention softmax run in
float32; the dense layers compute in `dtype`. Layers are stacked with `nn.scan`, so every
layer parameter has a leading `layers` axis.
"""
import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.errors import ConfigError

_kernel_init = nn.initializers.normal(0.02)  # BERT's initializer_range


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "BertConfig":
        """Reads the fields it needs from a Hugging Face config; refuses variants it cannot run."""
        unsupported = {"hidden_act": "gelu", "position_embedding_type": "absolute"}
        for key, supported in unsupported.items():
            if config.get(key, supported) != supported:
                raise ConfigError(
                    f"BertConfig: only {key}={supported!r} is supported, got {config[key]!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in fields})

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps,
        dtype=jnp.float32,
        name=name,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
    )


def _dense(features, axis, kernel_names, bias_names, dtype, name) -> nn.DenseGeneral:
    return nn.DenseGeneral(
        features=features,
        axis=axis,
        dtype=dtype,
        name=name,
        kernel_init=nn.with_logical_partitioning(_kernel_init, kernel_names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), bias_names),
    )


class BertEmbeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        cfg = self.config

        def table(rows: int, row_name: str | None, name: str) -> nn.Embed:
            init = nn.with_logical_partitioning(_kernel_init, (row_name, "embed"))
            return nn.Embed(rows, cfg.hidden_size, embedding_init=init, name=name)

        positions = jnp.arange(input_ids.shape[-1])[None]
        # Position and token-type tables are small: their rows stay unsharded (None).
        hidden = (
            table(cfg.vocab_size, "vocab", "word")(input_ids)
            + table(cfg.max_position_embeddings, None, "position")(positions)
            + table(cfg.type_vocab_size, None, "token_type")(token_type_ids)
        )
        return _layer_norm(cfg.layer_norm_eps, "norm")(hidden)


class BertSelfAttention(nn.Module):
    config: BertConfig
    dtype: Any

    @nn.compact
    def __call__(self, hidden: jax.Array, attention_bias: jax.Array) -> jax.Array:
        cfg = self.config
        per_head = (cfg.num_attention_heads, cfg.head_dim)

        def project(name: str) -> jax.Array:
            dense = _dense(per_head, -1, ("embed", "heads", "kv"), ("heads", "kv"), self.dtype, name)
            return dense(hidden)

        query = project("query") * jnp.asarray(cfg.head_dim**-0.5, self.dtype)
        key, value = project("key"), project("value")
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32) + attention_bias
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        attended = jnp.einsum("bhqk,bkhd->bqhd", probs, value)
        out = _dense(cfg.hidden_size, (-2, -1), ("heads", "kv", "embed"), ("embed",), self.dtype, "out")
        return out(attended)


class BertLayer(nn.Module):
    """One post-LN block, shaped `(hidden, attention_bias) -> (hidden, None)` for `nn.scan`."""

    config: BertConfig
    dtype: Any

    @nn.compact
    def __call__(self, hidden: jax.Array, attention_bias: jax.Array) -> tuple[jax.Array, None]:
        cfg = self.config
        attended = BertSelfAttention(cfg, self.dtype, name="attention")(hidden, attention_bias)
        hidden = _layer_norm(cfg.layer_norm_eps, "attention_norm")(hidden + attended)
        mlp_in = _dense(cfg.intermediate_size, -1, ("embed", "mlp"), ("mlp",), self.dtype, "mlp_in")
        mlp_out = _dense(cfg.hidden_size, -1, ("mlp", "embed"), ("embed",), self.dtype, "mlp_out")
        mlp = mlp_out(nn.gelu(mlp_in(hidden), approximate=False))
        return _layer_norm(cfg.layer_norm_eps, "mlp_norm")(hidden + mlp), None


class BertEncoder(nn.Module):
    """`(input_ids [B, L], attention_mask [B, L]) -> last hidden state [B, L, D] float32`.

    Truncate `config.num_hidden_layers` to output an earlier layer's hidden state.
    """

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        hidden = BertEmbeddings(self.config, name="embeddings")(input_ids, token_type_ids)
        # Padding keys get the most negative float32, as in transformers.
        keep = attention_mask.astype(bool)[:, None, None, :]
        attention_bias = jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min)
        layers = nn.scan(
            BertLayer,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=nn.broadcast,
            length=self.config.num_hidden_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(self.config, self.dtype, name="layers")
        if self.config.num_hidden_layers:  # zero layers: the embeddings are the output
            hidden, _ = layers(hidden, attention_bias)
        return hidden

"""BERT (and MiniLM) in Flax Linen; its hidden states match transformers' BertModel.

Post-LN blocks with absolute position and token-type embeddings. Inference only (no dropout).
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.models.text import blocks
from t2ijax.models.text.family import AbsolutePositionConfig, Family, config_from_fields, register, require
from t2ijax.models.text.tensors import Checkpoint, Params, stack_layers


@dataclasses.dataclass(frozen=True)
class BertConfig(AbsolutePositionConfig):
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "BertConfig":
        require(raw, "position_embedding_type", "absolute")
        return config_from_fields(cls, raw, activation="hidden_act")


class BertEmbeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        cfg = self.config
        positions = jnp.arange(input_ids.shape[-1])[None]
        # Position and token-type tables are small: their rows stay unsharded (None).
        hidden = (
            blocks.embedding(cfg.vocab_size, cfg.hidden_size, "vocab", "word")(input_ids)
            + blocks.embedding(cfg.max_position_embeddings, cfg.hidden_size, None, "position")(positions)
            + blocks.embedding(cfg.type_vocab_size, cfg.hidden_size, None, "token_type")(token_type_ids)
        )
        return blocks.layer_norm(cfg.layer_norm_eps, "norm")(hidden)


class BertLayer(blocks.TextLayer):
    """One post-LN block, shaped `(hidden, attention_bias) -> (hidden, None)` for `nn.scan`."""

    @nn.compact
    def __call__(self, hidden: jax.Array, attention_bias: jax.Array) -> tuple[jax.Array, None]:
        cfg = self.config
        attention = blocks.SelfAttention(cfg.num_attention_heads, cfg.head_dim, dtype=self.dtype, name="attention")
        hidden = blocks.layer_norm(cfg.layer_norm_eps, "attention_norm")(hidden + attention(hidden, attention_bias))
        mlp = blocks.MLP(cfg.intermediate_size, cfg.hidden_act, dtype=self.dtype, name="mlp")
        return blocks.layer_norm(cfg.layer_norm_eps, "mlp_norm")(hidden + mlp(hidden)), None


class BertEncoder(blocks.TextEncoderModule):
    """BERT's hidden state after `num_layers` layers; optional token types (default 0)."""

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
                 token_type_ids: jax.Array | None = None) -> jax.Array:
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        hidden = BertEmbeddings(self.config, name="embeddings")(input_ids, token_type_ids)
        return blocks.run_layers(BertLayer, self.depth, hidden, blocks.attention_bias(attention_mask),
                                 config=self.config, dtype=self.dtype)


def read_params(checkpoint: Checkpoint, config: BertConfig, num_layers: int) -> Params:
    """transformers BertModel tensors (bare, or below 'bert.' in task models) as a `BertEncoder`
    tree with the first `num_layers` layers."""
    tensors = checkpoint.under(("", "bert."), "embeddings.word_embeddings.weight", "BERT")

    def layer(i: int) -> Params:
        prefix = f"encoder.layer.{i}"
        return {
            "attention": tensors.attention(f"{prefix}.attention", ("self.query", "self.key", "self.value",
                                                                   "output.dense"),
                                           config.num_attention_heads, config.num_attention_heads,
                                           config.head_dim, bias=True),
            "attention_norm": tensors.norm(f"{prefix}.attention.output.LayerNorm", bias=True),
            "mlp": tensors.mlp(prefix, {"up": "intermediate.dense", "down": "output.dense"}, bias=True),
            "mlp_norm": tensors.norm(f"{prefix}.output.LayerNorm", bias=True),
        }

    return {
        "embeddings": {
            "word": tensors.embedding("embeddings.word_embeddings"),
            "position": tensors.embedding("embeddings.position_embeddings"),
            "token_type": tensors.embedding("embeddings.token_type_embeddings"),
            "norm": tensors.norm("embeddings.LayerNorm", bias=True),
        },
        "layers": stack_layers(layer, num_layers),
    }


register(Family(("bert",), BertConfig.from_dict, BertEncoder, read_params))

"""The T5 encoder (v1.0 and v1.1, also mT5) in Flax Linen; it matches transformers' T5EncoderModel.

Pre-RMSNorm blocks without biases or query scaling; one table of bucketed relative position
biases (stored with the first layer in transformers) is shared by every layer.
"""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.models.text import blocks
from t2ijax.models.text.family import Family, config_from_fields, register
from t2ijax.models.text.tensors import Checkpoint, Params, Tensors, stack_layers


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int
    hidden_size: int
    head_dim: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # v1.1: "gated-gelu"
    max_positions = None  # relative positions: no table to run out of

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        # transformers runs "gated-gelu" with the tanh approximation.
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "T5Config":
        config = config_from_fields(cls, raw, {"hidden_size": "d_model", "head_dim": "d_kv",
                                               "intermediate_size": "d_ff", "num_hidden_layers": "num_layers",
                                               "num_attention_heads": "num_heads"})
        if config.feed_forward_proj.count("-") > int(config.gated):
            raise ConfigError(f"feed_forward_proj={config.feed_forward_proj!r} is not supported; "
                              "use 'ACT' or 'gated-ACT'")
        blocks.check_activation(config.activation, "activation of feed_forward_proj")
        return config


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket [L, L] of key position minus query position, bidirectional: half the buckets per
    sign, of which the nearer half are exact distances and the rest log-spaced up to
    `max_distance`. Computed in float32 like transformers, so boundaries fall the same way."""
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    exact = half // 2
    distance = np.abs(relative)
    scaled = np.log(np.maximum(distance, 1).astype(np.float32) / exact) / math.log(max_distance / exact)
    logarithmic = np.minimum(exact + (scaled * (half - exact)).astype(np.int64), half - 1)
    return (relative > 0) * half + np.where(distance < exact, distance, logarithmic)


class T5Layer(blocks.TextLayer):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array) -> tuple[jax.Array, None]:
        cfg = self.config
        attention = blocks.SelfAttention(cfg.num_attention_heads, cfg.head_dim, use_bias=False, scale=1.0,
                                         dtype=self.dtype, name="attention")
        hidden = hidden + attention(blocks.rms_norm(cfg.layer_norm_epsilon, "attention_norm")(hidden), bias)
        mlp = blocks.MLP(cfg.intermediate_size, cfg.activation, cfg.gated, use_bias=False, dtype=self.dtype,
                         name="mlp")
        return hidden + mlp(blocks.rms_norm(cfg.layer_norm_epsilon, "mlp_norm")(hidden)), None


class T5Encoder(blocks.TextEncoderModule):
    """T5's encoder hidden state after `num_layers` layers (final RMSNorm after the last)."""

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        cfg = self.config
        hidden = blocks.embedding(cfg.vocab_size, cfg.hidden_size, "vocab", "embed")(input_ids)
        table = self.param("relative_bias", nn.with_logical_partitioning(blocks.INIT, (None, "heads")),
                           (cfg.relative_attention_num_buckets, cfg.num_attention_heads))
        buckets = relative_position_buckets(input_ids.shape[-1], cfg.relative_attention_num_buckets,
                                            cfg.relative_attention_max_distance)
        bias = jnp.transpose(table[buckets], (2, 0, 1))[None] + blocks.attention_bias(attention_mask)
        hidden = blocks.run_layers(T5Layer, self.depth, hidden, bias, config=cfg, dtype=self.dtype)
        return self.output(hidden, blocks.rms_norm(cfg.layer_norm_epsilon, "final_norm"))


def read_params(checkpoint: Checkpoint, config: T5Config, num_layers: int) -> Params:
    """The encoder of a T5EncoderModel or T5(ForConditionalGeneration) checkpoint."""
    tensors = checkpoint.under(("encoder.",), "block.0.layer.0.SelfAttention.q.weight", "T5")
    # The token table is tied to 'shared'; checkpoints keep one or both names.
    table = "encoder.embed_tokens" if "encoder.embed_tokens.weight" in checkpoint else "shared"
    mlp_names = {"gate": "wi_0", "up": "wi_1", "down": "wo"} if config.gated else {"up": "wi", "down": "wo"}

    def layer(i: int) -> Params:
        prefix = f"block.{i}.layer"
        return {
            "attention_norm": tensors.norm(f"{prefix}.0.layer_norm"),
            "attention": tensors.attention(f"{prefix}.0.SelfAttention", ("q", "k", "v", "o"),
                                           config.num_attention_heads, config.num_attention_heads,
                                           config.head_dim, bias=False),
            "mlp_norm": tensors.norm(f"{prefix}.1.layer_norm"),
            "mlp": tensors.mlp(f"{prefix}.1.DenseReluDense", mlp_names, bias=False),
        }

    return {
        "embed": Tensors(checkpoint, "", "T5").embedding(table),
        "relative_bias": tensors.take("block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        "layers": stack_layers(layer, num_layers),
        "final_norm": tensors.norm("final_layer_norm"),
    }


register(Family(("t5", "mt5"), T5Config.from_dict, T5Encoder, read_params))

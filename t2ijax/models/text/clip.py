"""CLIP's text transformer in Flax Linen; it matches transformers' CLIPTextModel, pooled output too.

Causal pre-LN blocks with absolute position embeddings and a final LayerNorm. Checkpoints of
CLIPTextModel(WithProjection) and of the whole CLIPModel load alike (only the text tower is read).
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.errors import ConfigError
from t2ijax.models.text import blocks
from t2ijax.models.text.family import AbsolutePositionConfig, Family, config_from_fields, register
from t2ijax.models.text.tensors import Checkpoint, Params, stack_layers

LEGACY_EOS_ID = 2  # configs from before transformers PR 24773; their end token has the largest id


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig(AbsolutePositionConfig):
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = LEGACY_EOS_ID

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CLIPTextConfig":
        # A whole CLIPModel's config.json holds the text part in text_config.
        return config_from_fields(cls, raw.get("text_config") or raw, activation="hidden_act")


class CLIPLayer(blocks.TextLayer):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array) -> tuple[jax.Array, None]:
        cfg = self.config
        attention = blocks.SelfAttention(cfg.num_attention_heads, cfg.head_dim, dtype=self.dtype, name="attention")
        hidden = hidden + attention(blocks.layer_norm(cfg.layer_norm_eps, "attention_norm")(hidden), bias)
        mlp = blocks.MLP(cfg.intermediate_size, cfg.hidden_act, dtype=self.dtype, name="mlp")
        return hidden + mlp(blocks.layer_norm(cfg.layer_norm_eps, "mlp_norm")(hidden)), None


class CLIPTextEncoder(blocks.TextEncoderModule):
    """CLIP's text hidden state after `num_layers` layers (final LayerNorm after the last), and
    `pooled`: the final state at each text's end token."""

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        cfg = self.config
        positions = jnp.arange(input_ids.shape[-1])[None]
        hidden = (blocks.embedding(cfg.vocab_size, cfg.hidden_size, "vocab", "token")(input_ids)
                  + blocks.embedding(cfg.max_position_embeddings, cfg.hidden_size, None, "position")(positions))
        bias = blocks.attention_bias(attention_mask, causal=True)
        hidden = blocks.run_layers(CLIPLayer, self.depth, hidden, bias, config=cfg, dtype=self.dtype)
        return self.output(hidden, blocks.layer_norm(cfg.layer_norm_eps, "final_norm"))

    def pooled(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, D] float32; needs every layer (`num_layers` None or all)."""
        if not self.runs_every_layer:
            raise ConfigError("CLIP's pooled output needs every layer; use text_encoder.layer=-1")
        hidden = self(input_ids, attention_mask)
        if self.config.eos_token_id == LEGACY_EOS_ID:
            end = jnp.argmax(input_ids, axis=-1)
        else:
            end = jnp.argmax(input_ids == self.config.eos_token_id, axis=-1)  # the first end token
        return jnp.take_along_axis(hidden, end[:, None, None], axis=1)[:, 0]


def read_params(checkpoint: Checkpoint, config: CLIPTextConfig, num_layers: int) -> Params:
    tensors = checkpoint.under(("", "text_model."), "embeddings.token_embedding.weight", "CLIP text")

    def layer(i: int) -> Params:
        prefix = f"encoder.layers.{i}"
        return {
            "attention_norm": tensors.norm(f"{prefix}.layer_norm1", bias=True),
            "attention": tensors.attention(f"{prefix}.self_attn", ("q_proj", "k_proj", "v_proj", "out_proj"),
                                           config.num_attention_heads, config.num_attention_heads,
                                           config.head_dim, bias=True),
            "mlp_norm": tensors.norm(f"{prefix}.layer_norm2", bias=True),
            "mlp": tensors.mlp(f"{prefix}.mlp", {"up": "fc1", "down": "fc2"}, bias=True),
        }

    return {
        "token": tensors.embedding("embeddings.token_embedding"),
        "position": tensors.embedding("embeddings.position_embedding"),
        "layers": stack_layers(layer, num_layers),
        "final_norm": tensors.norm("final_layer_norm", bias=True),
    }


register(Family(("clip_text_model", "clip"), CLIPTextConfig.from_dict, CLIPTextEncoder,
                read_params))

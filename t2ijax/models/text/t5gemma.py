"""The encoder of T5Gemma in Flax Linen; it matches transformers' T5GemmaEncoder (the encoder of
T5GemmaModel, T5GemmaEncoderModel and T5GemmaForConditionalGeneration).

Gemma-2 blocks made bidirectional: RMSNorm before and after attention and MLP, grouped-query
attention with rotary positions and tanh soft-capped logits, layers alternating between a
local window and full attention, embeddings scaled by sqrt(hidden_size).
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.errors import ConfigError
from t2ijax.models.text import blocks
from t2ijax.models.text.family import Family, RotaryConfig, config_from_fields, register, rope_theta
from t2ijax.models.text.tensors import Checkpoint, Params, stack_layers

SLIDING = "sliding_attention"
BARE_ENCODER = "t5_gemma_module"


@dataclasses.dataclass(frozen=True)
class T5GemmaConfig(RotaryConfig):
    layer_types: tuple[str, ...]
    hidden_activation: str = "gelu_pytorch_tanh"
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    query_pre_attn_scalar: float = 256.0
    attn_logit_softcapping: float | None = None
    sliding_window: int | None = None
    rope_theta: float = 10_000.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "T5GemmaConfig":
        """A T5Gemma model's config.json (its 'encoder' section), or that of the bare encoder
        (model_type t5_gemma_module: the fields at the top, as PRX pipelines save their text encoder)."""
        if raw.get("model_type") == BARE_ENCODER:
            encoder = raw
        elif isinstance(raw.get("encoder"), dict):
            encoder = raw["encoder"]
        else:
            raise ConfigError("a T5Gemma config.json needs an 'encoder' section")
        # transformers' default: every other layer, starting with the first, is local.
        layer_types = encoder.get("layer_types") or [
            SLIDING if i % 2 == 0 else "full_attention" for i in range(encoder["num_hidden_layers"])]
        return config_from_fields(cls, {**encoder, "layer_types": tuple(layer_types),
                                        "rope_theta": rope_theta(encoder)}, activation="hidden_activation")


class T5GemmaLayer(blocks.TextLayer):
    @nn.compact
    def __call__(self, hidden, full_bias, window_bias, rope, is_sliding) -> tuple[jax.Array, None]:
        cfg = self.config

        def norm(name: str) -> nn.Module:
            return blocks.rms_norm(cfg.rms_norm_eps, name)

        attention = blocks.SelfAttention(cfg.num_attention_heads, cfg.head_dim, cfg.num_key_value_heads,
                                         use_bias=cfg.attention_bias, scale=cfg.query_pre_attn_scalar**-0.5,
                                         softcap=cfg.attn_logit_softcapping, dtype=self.dtype, name="attention")
        bias = jnp.where(is_sliding, window_bias, full_bias)
        hidden = hidden + norm("attention_post_norm")(attention(norm("attention_norm")(hidden), bias, rope))
        mlp = blocks.MLP(cfg.intermediate_size, cfg.hidden_activation, gated=True, use_bias=False,
                         dtype=self.dtype, name="mlp")
        return hidden + norm("mlp_post_norm")(mlp(norm("mlp_norm")(hidden))), None


class T5GemmaEncoder(blocks.TextEncoderModule):
    """T5Gemma's encoder hidden state after `num_layers` layers (final RMSNorm after the last)."""

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        cfg = self.config
        hidden = blocks.embedding(cfg.vocab_size, cfg.hidden_size, "vocab", "embed")(input_ids)
        hidden = hidden * jnp.float32(cfg.hidden_size**0.5)
        rope = blocks.rope_tables(input_ids.shape[-1], cfg.head_dim, cfg.rope_theta)
        full_bias = blocks.attention_bias(attention_mask)
        window_bias = blocks.attention_bias(attention_mask, window=cfg.sliding_window)
        is_sliding = jnp.array([kind == SLIDING for kind in cfg.layer_types[:self.depth]])
        hidden = blocks.run_layers(T5GemmaLayer, self.depth, hidden, full_bias, window_bias, rope, is_sliding,
                                   in_axes=(nn.broadcast,) * 3 + (0,), config=cfg, dtype=self.dtype)
        return self.output(hidden, blocks.rms_norm(cfg.rms_norm_eps, "final_norm"))


def read_params(checkpoint: Checkpoint, config: T5GemmaConfig, num_layers: int) -> Params:
    tensors = checkpoint.under(("encoder.", "model.encoder.", ""), "embed_tokens.weight", "T5Gemma")

    def norm(key: str) -> Params:
        return tensors.norm(key, offset=1.0)  # Gemma norms scale by (1 + weight)

    def layer(i: int) -> Params:
        prefix = f"layers.{i}"
        return {
            **tensors.llama_style_layer(prefix, config),
            "attention_norm": norm(f"{prefix}.pre_self_attn_layernorm"),
            "attention_post_norm": norm(f"{prefix}.post_self_attn_layernorm"),
            "mlp_norm": norm(f"{prefix}.pre_feedforward_layernorm"),
            "mlp_post_norm": norm(f"{prefix}.post_feedforward_layernorm"),
        }

    return {
        "embed": tensors.embedding("embed_tokens"),
        "layers": stack_layers(layer, num_layers),
        "final_norm": norm("norm"),
    }


register(Family(("t5gemma", BARE_ENCODER), T5GemmaConfig.from_dict, T5GemmaEncoder, read_params))

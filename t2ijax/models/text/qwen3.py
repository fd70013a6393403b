"""Qwen3's decoder stack used as a text encoder, in Flax Linen; it matches transformers' Qwen3Model.

Causal pre-RMSNorm blocks with grouped-query attention, RMSNorm on each query and key head,
rotary positions and a SwiGLU MLP. Checkpoints of Qwen3Model or Qwen3ForCausalLM load alike
(the language-model head is not read).
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax

from t2ijax.models.text import blocks
from t2ijax.models.text.family import Family, RotaryConfig, config_from_fields, register, require, rope_theta
from t2ijax.models.text.tensors import Checkpoint, Params, stack_layers


@dataclasses.dataclass(frozen=True)
class Qwen3Config(RotaryConfig):
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    rope_theta: float = 10_000.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Qwen3Config":
        require(raw, "use_sliding_window", False)
        head_dim = raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
        return config_from_fields(cls, {**raw, "head_dim": head_dim, "rope_theta": rope_theta(raw)},
                                  activation="hidden_act")


class Qwen3Layer(blocks.TextLayer):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, rope) -> tuple[jax.Array, None]:
        cfg = self.config
        attention = blocks.SelfAttention(cfg.num_attention_heads, cfg.head_dim, cfg.num_key_value_heads,
                                         use_bias=cfg.attention_bias, qk_norm_eps=cfg.rms_norm_eps,
                                         dtype=self.dtype, name="attention")
        hidden = hidden + attention(blocks.rms_norm(cfg.rms_norm_eps, "attention_norm")(hidden), bias, rope)
        mlp = blocks.MLP(cfg.intermediate_size, cfg.hidden_act, gated=True, use_bias=False, dtype=self.dtype,
                         name="mlp")
        return hidden + mlp(blocks.rms_norm(cfg.rms_norm_eps, "mlp_norm")(hidden)), None


class Qwen3Encoder(blocks.TextEncoderModule):
    """Qwen3's hidden state after `num_layers` layers (final RMSNorm after the last); causal, so
    a token's state depends only on the tokens before it."""

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        cfg = self.config
        hidden = blocks.embedding(cfg.vocab_size, cfg.hidden_size, "vocab", "embed")(input_ids)
        rope = blocks.rope_tables(input_ids.shape[-1], cfg.head_dim, cfg.rope_theta)
        bias = blocks.attention_bias(attention_mask, causal=True)
        hidden = blocks.run_layers(Qwen3Layer, self.depth, hidden, bias, rope, config=cfg, dtype=self.dtype)
        return self.output(hidden, blocks.rms_norm(cfg.rms_norm_eps, "final_norm"))


def read_params(checkpoint: Checkpoint, config: Qwen3Config, num_layers: int) -> Params:
    tensors = checkpoint.under(("", "model."), "embed_tokens.weight", "Qwen3")

    def layer(i: int) -> Params:
        prefix = f"layers.{i}"
        params = tensors.llama_style_layer(prefix, config)
        params["attention"]["query_norm"] = tensors.norm(f"{prefix}.self_attn.q_norm")
        params["attention"]["key_norm"] = tensors.norm(f"{prefix}.self_attn.k_norm")
        params["attention_norm"] = tensors.norm(f"{prefix}.input_layernorm")
        params["mlp_norm"] = tensors.norm(f"{prefix}.post_attention_layernorm")
        return params

    return {
        "embed": tensors.embedding("embed_tokens"),
        "layers": stack_layers(layer, num_layers),
        "final_norm": tensors.norm("norm"),
    }


register(Family(("qwen3",), Qwen3Config.from_dict, Qwen3Encoder, read_params))

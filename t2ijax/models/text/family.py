"""The table of text encoder families, keyed by the `model_type` of a config.json.

A family is a config reader, a Flax module and a checkpoint reader. Every family's module has
the fields `config`, `dtype` (compute dtype) and `num_layers` (how many layers run; the final
norm, where there is one, only when all of them do), and maps
`(input_ids [B, L], attention_mask [B, L]) -> hidden states [B, L, D] float32`.
Every family's config has `hidden_size`, `num_hidden_layers` and `max_positions` (the size of
its position table, None where positions are relative or rotary).
"""
import dataclasses
from collections.abc import Callable
from typing import Any

from t2ijax.errors import ConfigError
from t2ijax.models.text.blocks import check_activation
from t2ijax.models.text.tensors import Checkpoint, Params


@dataclasses.dataclass(frozen=True)
class Family:
    model_types: tuple[str, ...]
    read_config: Callable[[dict[str, Any]], Any]        # config.json contents -> config dataclass
    module: type                                        # module(config, dtype=..., num_layers=...)
    read_params: Callable[[Checkpoint, Any, int], Params]  # (checkpoint, config, num_layers) -> params


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    for model_type in family.model_types:
        FAMILIES[model_type] = family
    return family


def config_from_fields(cls, raw: dict[str, Any], renames: dict[str, str] | None = None, activation: str = ""):
    """`cls` from the config.json fields of the same name (or `renames[field]`); fields the file
    lacks keep their defaults. The field named `activation`, if any, must name a supported one."""
    renames = renames or {}
    values = {}
    for field in dataclasses.fields(cls):
        key = renames.get(field.name, field.name)
        if raw.get(key) is not None:
            values[field.name] = raw[key]
    try:
        config = cls(**values)
    except TypeError as error:  # a field without a default that the file lacks
        raise ConfigError(f"{cls.__name__} is missing a field: {error}") from None
    if activation:
        check_activation(getattr(config, activation), activation)
    return config


@dataclasses.dataclass(frozen=True)
class RotaryConfig:
    """The fields the rotary, grouped-query families (Qwen3, T5Gemma) share, named as in config.json."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_positions = None  # rotary positions: no table to run out of


class AbsolutePositionConfig:
    """For configs (BERT, CLIP) whose heads split the hidden size and whose positions come from a
    table of `max_position_embeddings` rows."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_positions(self) -> int:
        return self.max_position_embeddings


def require(raw: dict[str, Any], key: str, supported: Any) -> None:
    """Refuses a config.json whose `key` asks for a variant the port does not implement."""
    if raw.get(key, supported) != supported:
        raise ConfigError(f"{key}={raw[key]!r} is not supported (only {supported!r})")


def rope_theta(raw: dict[str, Any]) -> float:
    """The RoPE base of plain (unscaled) rotary embeddings, from either config.json layout."""
    parameters = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    if kind != "default":
        raise ConfigError(f"rope_type={kind!r} is not supported (only 'default')")
    return float(parameters.get("rope_theta", raw.get("rope_theta", 10_000.0)))

"""The pre-LayerNorm vision transformer encoder shared by the CLIP and DINOv2 towers.

Inference only, float32. Layers are stacked with `nn.scan`, so every layer parameter has a
leading `layers` axis. `torch_layer_params` maps one transformers layer onto a layer here,
given the model's names for its parts.
"""
import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.models.vision.weights import TorchTensors

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}
_init = nn.initializers.normal(0.02)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_size: int
    activation: str
    layer_norm_eps: float
    layer_scale: bool  # DINOv2 scales each residual branch by a learned vector

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"vision transformer activation {self.activation!r} is not supported; "
                              f"supported: {', '.join(ACTIVATIONS)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=jnp.float32, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))


def dense(features, axis, kernel_names, bias_names, name, use_bias=True) -> nn.DenseGeneral:
    return nn.DenseGeneral(features=features, axis=axis, use_bias=use_bias, name=name,
                           precision=jax.lax.Precision.HIGHEST,
                           kernel_init=nn.with_logical_partitioning(_init, kernel_names),
                           bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), bias_names))


class ViTLayer(nn.Module):
    """One pre-LN block, shaped `(hidden, None) -> (hidden, None)` for `nn.scan`."""

    config: ViTConfig

    def _scaled(self, branch: jax.Array, name: str) -> jax.Array:
        if not self.config.layer_scale:
            return branch
        init = nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",))
        return branch * self.param(name, init, (self.config.hidden_size,))

    @nn.compact
    def __call__(self, hidden: jax.Array, _) -> tuple[jax.Array, None]:
        cfg = self.config
        highest = jax.lax.Precision.HIGHEST
        x = layer_norm(cfg.layer_norm_eps, "norm1")(hidden)
        per_head = (cfg.num_heads, cfg.head_dim)
        query, key, value = (dense(per_head, -1, ("embed", "heads", "kv"), ("heads", "kv"), name)(x)
                             for name in ("query", "key", "value"))
        logits = jnp.einsum("bqhd,bkhd->bhqk", query * cfg.head_dim**-0.5, key, precision=highest)
        attended = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), value, precision=highest)
        out = dense(cfg.hidden_size, (-2, -1), ("heads", "kv", "embed"), ("embed",), "out")(attended)
        hidden = hidden + self._scaled(out, "layer_scale1")
        x = layer_norm(cfg.layer_norm_eps, "norm2")(hidden)
        x = dense(cfg.mlp_size, -1, ("embed", "mlp"), ("mlp",), "mlp_in")(x)
        x = dense(cfg.hidden_size, -1, ("mlp", "embed"), ("embed",), "mlp_out")(ACTIVATIONS[cfg.activation](x))
        return hidden + self._scaled(x, "layer_scale2"), None


class ViTEncoder(nn.Module):
    """[B, L, D] tokens -> [B, L, D] after `config.num_layers` blocks."""

    config: ViTConfig

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        layers = nn.scan(ViTLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                         length=self.config.num_layers,
                         metadata_params={nn.PARTITION_NAME: "layers"})(self.config, name="layers")
        hidden, _ = layers(hidden, None)
        return hidden


def torch_layer_params(tensors: TorchTensors, prefix: str, names: dict[str, str], config: ViTConfig) -> dict:
    """One layer's parameters; `names` gives the torch name of each part under `prefix`."""
    d, h, k = config.hidden_size, config.num_heads, config.head_dim
    params = {
        "norm1": tensors.layer_norm(prefix + names["norm1"]),
        "query": tensors.linear(prefix + names["query"], (d, h, k), (h, k)),
        "key": tensors.linear(prefix + names["key"], (d, h, k), (h, k)),
        "value": tensors.linear(prefix + names["value"], (d, h, k), (h, k)),
        "out": tensors.linear(prefix + names["out"], (h, k, d), (d,)),
        "norm2": tensors.layer_norm(prefix + names["norm2"]),
        "mlp_in": tensors.linear(prefix + names["mlp_in"], (d, -1), (-1,)),
        "mlp_out": tensors.linear(prefix + names["mlp_out"], (-1, d), (d,)),
    }
    if config.layer_scale:
        params["layer_scale1"] = tensors.take(prefix + names["layer_scale1"])
        params["layer_scale2"] = tensors.take(prefix + names["layer_scale2"])
    return params


def stack_layers(layers: list[dict]) -> dict:
    return jax.tree.map(lambda *per_layer: np.stack(per_layer), *layers)

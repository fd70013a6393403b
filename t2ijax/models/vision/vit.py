"""The pre-LayerNorm vision transformer encoder shared by the CLIP, DINOv2 and DINOv3 towers.

Inference only, float32. Layers are stacked with `nn.scan`, so every layer parameter has a
leading `layers` axis. `torch_layer_params` maps one transformers layer onto a layer here,
given the model's names for its parts. DINOv3 adds per-projection biases, a gated (SwiGLU)
MLP and RoPE on the patch tokens (the trailing tokens; class and register tokens are not rotated).
"""
import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.models.layers import apply_rope
from t2ijax.models.vision.weights import TorchTensors

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "silu": nn.silu,
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
    query_bias: bool = True
    key_bias: bool = True
    value_bias: bool = True
    out_bias: bool = True
    mlp_bias: bool = True
    gated_mlp: bool = False  # down(act(gate(x)) * up(x)), the up projection named mlp_in

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


def dense(features, axis, name, use_bias=True) -> nn.DenseGeneral:
    # No logical axis names: DenseGeneral makes its kernel and bias flat and reshapes them, and the flat
    # arrays cannot carry the full shapes' names (a constraint error under a mesh, e.g. as a REPA teacher).
    return nn.DenseGeneral(features=features, axis=axis, use_bias=use_bias, name=name,
                           precision=jax.lax.Precision.HIGHEST, kernel_init=_init)


def rotate_patches(x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
    """RoPE on the last P tokens of x [B, L, heads, head_dim] by (cos, sin) [P, head_dim / 2].

    Dimensions i and i + head_dim / 2 rotate together (transformers' rotate_half); laying them side by
    side lets layers.apply_rope rotate adjacent pairs. Queries and keys get the same permutation, so
    their dot products, all attention reads, are unchanged.
    """
    paired = x.reshape(*x.shape[:-1], 2, -1).swapaxes(-1, -2).reshape(x.shape)
    num_patches = rope[0].shape[0]
    return jnp.concatenate([paired[:, :-num_patches], apply_rope(paired[:, -num_patches:], *rope)], axis=1)


def patch_embedding(hidden_size: int, patch_size: int, use_bias: bool) -> nn.Conv:
    """[B, H, W, 3] -> [B, H // p, W // p, hidden_size] over non-overlapping p x p patches."""
    patch = (patch_size, patch_size)
    return nn.Conv(hidden_size, patch, strides=patch, padding="VALID", use_bias=use_bias,
                   precision=jax.lax.Precision.HIGHEST,
                   kernel_init=nn.with_logical_partitioning(_init, (None, None, "conv_in", "embed")),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
                   name="patch_embedding")


class ViTLayer(nn.Module):
    """One pre-LN block, shaped `(hidden, rope) -> (hidden, None)` for `nn.scan`; rope None: no RoPE."""

    config: ViTConfig

    def _scaled(self, branch: jax.Array, name: str) -> jax.Array:
        if not self.config.layer_scale:
            return branch
        init = nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",))
        return branch * self.param(name, init, (self.config.hidden_size,))

    @nn.compact
    def __call__(self, hidden: jax.Array, rope) -> tuple[jax.Array, None]:
        cfg = self.config
        highest = jax.lax.Precision.HIGHEST
        x = layer_norm(cfg.layer_norm_eps, "norm1")(hidden)
        per_head = (cfg.num_heads, cfg.head_dim)
        query, key, value = (dense(per_head, -1, name, bias)(x)
                             for name, bias in (("query", cfg.query_bias), ("key", cfg.key_bias),
                                                ("value", cfg.value_bias)))
        if rope is not None:
            query, key = rotate_patches(query, rope), rotate_patches(key, rope)
        logits = jnp.einsum("bqhd,bkhd->bhqk", query * cfg.head_dim**-0.5, key, precision=highest)
        attended = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), value, precision=highest)
        out = dense(cfg.hidden_size, (-2, -1), "out", cfg.out_bias)(attended)
        hidden = hidden + self._scaled(out, "layer_scale1")
        x = layer_norm(cfg.layer_norm_eps, "norm2")(hidden)
        activation = ACTIVATIONS[cfg.activation]
        up = dense(cfg.mlp_size, -1, "mlp_in", cfg.mlp_bias)(x)
        if cfg.gated_mlp:
            up = up * activation(dense(cfg.mlp_size, -1, "mlp_gate", cfg.mlp_bias)(x))
        else:
            up = activation(up)
        x = dense(cfg.hidden_size, -1, "mlp_out", cfg.mlp_bias)(up)
        return hidden + self._scaled(x, "layer_scale2"), None


class ViTEncoder(nn.Module):
    """[B, L, D] tokens -> [B, L, D] after `config.num_layers` blocks; `rope` as `rotate_patches` takes it."""

    config: ViTConfig

    @nn.compact
    def __call__(self, hidden: jax.Array, rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        layers = nn.scan(ViTLayer, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=nn.broadcast,
                         length=self.config.num_layers,
                         metadata_params={nn.PARTITION_NAME: "layers"})(self.config, name="layers")
        hidden, _ = layers(hidden, rope)
        return hidden


def torch_layer_params(tensors: TorchTensors, prefix: str, names: dict[str, str], config: ViTConfig) -> dict:
    """One layer's parameters; `names` gives the torch name of each part under `prefix`."""
    d, h, k = config.hidden_size, config.num_heads, config.head_dim

    def linear(part, kernel_shape, bias_shape, has_bias):
        return tensors.linear(prefix + names[part], kernel_shape, bias_shape if has_bias else None)

    params = {
        "norm1": tensors.layer_norm(prefix + names["norm1"]),
        "query": linear("query", (d, h, k), (h, k), config.query_bias),
        "key": linear("key", (d, h, k), (h, k), config.key_bias),
        "value": linear("value", (d, h, k), (h, k), config.value_bias),
        "out": linear("out", (h, k, d), (d,), config.out_bias),
        "norm2": tensors.layer_norm(prefix + names["norm2"]),
        "mlp_in": linear("mlp_in", (d, -1), (-1,), config.mlp_bias),
        "mlp_out": linear("mlp_out", (-1, d), (d,), config.mlp_bias),
    }
    if config.gated_mlp:
        params["mlp_gate"] = linear("mlp_gate", (d, -1), (-1,), config.mlp_bias)
    if config.layer_scale:
        params["layer_scale1"] = tensors.take(prefix + names["layer_scale1"])
        params["layer_scale2"] = tensors.take(prefix + names["layer_scale2"])
    return params


def stack_layers(layers: list[dict]) -> dict:
    return jax.tree.map(lambda *per_layer: np.stack(per_layer), *layers)


def dino_params(tensors: TorchTensors, config, layer_prefix: str, names: dict[str, str], patch: str, norm: str,
                **extra) -> dict:
    """A DINO tower's parameters (DINOv2, DINOv3): patch embedding, class and register tokens, the
    stacked layers (`layer_prefix` + index + "."), the final norm, and `extra` entries as given."""
    layers = [torch_layer_params(tensors, f"{layer_prefix}{i}.", names, config.encoder)
              for i in range(config.encoder.num_layers)]
    params = {"patch_embedding": tensors.conv(patch, bias=True),
              "cls_token": tensors.take("embeddings.cls_token").reshape(1, -1),
              "encoder": {"layers": stack_layers(layers)}, "norm": tensors.layer_norm(norm), **extra}
    if config.num_register_tokens:
        params["register_tokens"] = tensors.take("embeddings.register_tokens")[0]
    return params

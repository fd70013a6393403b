"""diffusers state dicts <-> Flax parameter trees of the autoencoder ports.

The ports name every module as diffusers does, so a parameter's checkpoint name is its path
joined by dots, with Flax's `kernel` / `scale` read as `weight`. Kernels change layout:
conv [out, in, kh, kw] <-> [kh, kw, in, out], linear [out, in] <-> [in, out].
"""
import dataclasses

import flax.linen as nn
import jax
import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.models.vision.weights import TorchTensors

_TORCH_LEAF = {"kernel": "weight", "scale": "weight"}
_TO_FLAX = {4: (2, 3, 1, 0), 2: (1, 0)}
_TO_TORCH = {4: (3, 2, 0, 1), 2: (1, 0)}


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def config_fields(config_cls, config: dict) -> dict:
    """The entries of a config.json that are fields of `config_cls`, JSON lists as tuples."""
    return {f.name: _tupled(config[f.name]) for f in dataclasses.fields(config_cls) if f.name in config}


def _torch_name(path) -> str:
    keys = [k.key for k in path]
    return ".".join(keys[:-1] + [_TORCH_LEAF.get(keys[-1], keys[-1])])


def _relayout(array: np.ndarray, leaf: str, axes: dict) -> np.ndarray:
    return array.transpose(axes[array.ndim]) if leaf == "kernel" else array


def params_from_torch(module: nn.Module, example: np.ndarray, tensors: TorchTensors) -> dict:
    """`module`'s parameter tree filled from the checkpoint, each shape checked against config.json's."""
    expected = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), example))["params"]

    def fill(path, leaf):
        value = _relayout(tensors.take(_torch_name(path)), path[-1].key, _TO_FLAX)
        if value.shape != leaf.shape:
            raise ConfigError(f"{tensors.model} tensor {_torch_name(path)} has shape {value.shape} in Flax layout; "
                              f"config.json implies {leaf.shape}")
        return value

    return jax.tree_util.tree_map_with_path(fill, expected)


def params_to_torch(params: dict) -> dict[str, np.ndarray]:
    """The diffusers state dict of a parameter tree (float32, contiguous: ready for safetensors)."""
    flat = jax.tree_util.tree_leaves_with_path(nn.unbox(params))
    return {_torch_name(path): np.ascontiguousarray(_relayout(np.asarray(leaf, np.float32), path[-1].key, _TO_TORCH))
            for path, leaf in flat}

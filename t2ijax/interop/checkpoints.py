"""diffusers transformer directories in and out of t2ijax, whatever the class.

A directory holds config.json (its "_class_name" picks the backbone) and
diffusion_pytorch_model*.safetensors (one file, or shards with an index); a pipeline directory holds
it under transformer/. Each class's module (interop/<class>_weights.py) maps the config.json to its
Flax module's fields and the tensors to its params.
"""
import importlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from t2ijax import storage
from t2ijax.errors import ConfigError
from t2ijax.models.text.tensors import Checkpoint

# diffusers class -> (t2ijax backbone, the module that converts it)
CLASSES = {
    "PRXTransformer2DModel": ("prx", "t2ijax.interop.prx_weights"),
    "PixArtTransformer2DModel": ("dit_cross", "t2ijax.interop.pixart_weights"),
    "SD3Transformer2DModel": ("mmdit", "t2ijax.interop.sd3_weights"),
    "FluxTransformer2DModel": ("flux", "t2ijax.interop.flux_weights"),
}
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def converter(class_name: str):
    """The conversion module of a diffusers transformer class; a ConfigError lists the supported ones."""
    if class_name not in CLASSES:
        raise ConfigError(f"diffusers class {class_name} is not supported; t2ijax reads {', '.join(CLASSES)}")
    return importlib.import_module(CLASSES[class_name][1])


def local_dir(name_or_path: str, whole_pipeline: bool = False) -> Path:
    """The directory itself, or a Hub id's snapshot: its transformer only, or every component."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.is_absolute() or name_or_path.startswith("."):
        raise ConfigError(f"{name_or_path} is not a directory; give a diffusers transformer or pipeline directory")
    from huggingface_hub import snapshot_download

    patterns = None if whole_pipeline else ["transformer/*", "config.json", "*.safetensors*", "model_index.json"]
    try:
        return Path(snapshot_download(name_or_path, allow_patterns=patterns))
    except Exception as error:  # offline, unknown id, gated repo: one line that says which
        raise ConfigError(f"{name_or_path} is not a local directory and could not be fetched from the "
                          f"Hugging Face hub ({type(error).__name__}); download it and pass its path") from error


def transformer_dir(name_or_path: str, class_names: tuple[str, ...] = tuple(CLASSES)) -> tuple[Path, str]:
    """(the directory holding the transformer's config.json — the path itself or its transformer/ —, its class);
    a ConfigError unless the class is one of `class_names`."""
    path = local_dir(str(name_or_path))
    wanted = " or ".join(class_names)
    for candidate in (path, path / "transformer"):
        config = candidate / "config.json"
        if config.is_file():
            class_name = json.loads(config.read_text()).get("_class_name")
            if class_name in class_names:
                return candidate, class_name
            if candidate == path and not (path / "transformer").is_dir():
                if class_name in CLASSES or len(class_names) == 1:
                    raise ConfigError(f"{config} describes a {class_name}, not a {wanted}")
                converter(class_name)  # the list of supported classes
    raise ConfigError(f"{path} has no {wanted} config.json (neither at the top nor under transformer/)")


def read_config(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


def backbone_of(class_name: str) -> str:
    return CLASSES[class_name][0]


def from_diffusers(name_or_path: str, dtype=jnp.float32, class_names: tuple[str, ...] = tuple(CLASSES),
                   **model_overrides):
    """(model, params) from a diffusers transformer directory, pipeline directory or hub id of any supported class.

    `model.apply({'params': params}, x, t, text, text_mask, pooled=..., guidance=...)` takes x NHWC and t in
    [0, 1] (1 = noise). `model_overrides` set module fields that are not part of the weights (compute dtype,
    scan_layers, remat_policy, attention_impl).
    """
    directory, class_name = transformer_dir(name_or_path, class_names)
    module = converter(class_name)
    model = module.MODEL(**module.model_fields(read_config(directory)), **{"dtype": dtype, **model_overrides})
    params = module.params_from_state_dict(Checkpoint(directory).read_all(), model, source=str(directory))
    return model, jax.tree.map(lambda x: jnp.asarray(x, model.param_dtype), params)


def load_params(directory: Path, class_name: str, model):
    """The checkpoint's params for `model` (numpy, as the class's table maps them)."""
    return converter(class_name).params_from_state_dict(Checkpoint(directory).read_all(), model, source=str(directory))


def class_of(model) -> str:
    """The diffusers class a Flax denoiser exports to; a ConfigError for a backbone diffusers has no class for."""
    for class_name, (_, module_name) in CLASSES.items():
        if type(model) is importlib.import_module(module_name).MODEL:
            return class_name
    raise ConfigError(f"{type(model).__name__} has no diffusers class to export to; t2ijax exports "
                      f"{', '.join(CLASSES)}")


def _shards(tensors: dict[str, np.ndarray], max_bytes: int) -> list[dict[str, np.ndarray]]:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        if shards[-1] and size + tensors[name].nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += tensors[name].nbytes
    return shards


def to_diffusers(model, params: dict, path: str, max_shard_bytes: int = 5 << 30) -> storage.Path:
    """Writes `params` of `model` as a directory its diffusers class's `from_pretrained` loads (local or gs://).

    Weights are float32, in shards of at most `max_shard_bytes` with an index when they exceed it.
    """
    module = converter(class_of(model))
    config = module.diffusers_config(model)  # a ConfigError before anything is written
    directory = storage.resolve(path)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = module.state_dict_from_params(params, model)
    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        (directory / WEIGHTS_NAME).write_bytes(safetensors.numpy.save(shards[0]))
    else:
        stem = WEIGHTS_NAME.removesuffix(".safetensors")
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            (directory / name).write_bytes(safetensors.numpy.save(shard))
            weight_map.update(dict.fromkeys(shard, name))
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
        (directory / f"{WEIGHTS_NAME}.index.json").write_text(json.dumps(index, indent=1))
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return directory

"""PRX checkpoints in diffusers format: read them into the Flax PRX, write Flax PRX params back.

A directory holds config.json (class PRXTransformer2DModel) and diffusion_pytorch_model*.safetensors
(one file, or shards with an index); a pipeline directory holds it under transformer/.
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from t2ijax import storage
from t2ijax.errors import ConfigError
from t2ijax.interop.prx_weights import params_from_state_dict, state_dict_from_params
from t2ijax.models.prx import PRX
from t2ijax.models.text.tensors import Checkpoint

CLASS_NAME = "PRXTransformer2DModel"
# PRXTransformer2DModel.__init__ arguments, each a PRX field of the same name and meaning.
CONFIG_FIELDS = ("in_channels", "patch_size", "context_in_dim", "hidden_size", "mlp_ratio", "num_heads", "depth",
                 "axes_dim", "theta", "time_factor", "time_max_period", "bottleneck_size", "resolution_embeds")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def local_dir(name_or_path: str, whole_pipeline: bool = False) -> Path:
    """The directory itself, or a Hub id's snapshot: its transformer only, or every component."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.is_absolute() or name_or_path.startswith("."):
        raise ConfigError(f"{name_or_path} is not a directory; give a diffusers PRX transformer or pipeline directory")
    from huggingface_hub import snapshot_download

    patterns = None if whole_pipeline else ["transformer/*", "config.json", "*.safetensors*", "model_index.json"]
    try:
        return Path(snapshot_download(name_or_path, allow_patterns=patterns))
    except Exception as error:  # offline, unknown id, gated repo: one line that says which
        raise ConfigError(f"{name_or_path} is not a local directory and could not be fetched from the "
                          f"Hugging Face hub ({type(error).__name__}); download it and pass its path") from error


def transformer_dir(name_or_path: str) -> Path:
    """The directory holding the transformer's config.json: the path itself or its transformer/."""
    path = local_dir(str(name_or_path))
    for candidate in (path, path / "transformer"):
        config = candidate / "config.json"
        if config.is_file():
            class_name = json.loads(config.read_text()).get("_class_name")
            if class_name == CLASS_NAME:
                return candidate
            if candidate == path and not (path / "transformer").is_dir():
                raise ConfigError(f"{config} describes a {class_name}, not a {CLASS_NAME}")
    raise ConfigError(f"{path} has no {CLASS_NAME} config.json (neither at the top nor under transformer/)")


def prx_config(directory: Path) -> dict:
    """The PRX fields of a diffusers config.json (diffusers' defaults for those it leaves out)."""
    config = json.loads((directory / "config.json").read_text())
    return {k: config[k] for k in CONFIG_FIELDS if k in config and config[k] is not None}


def prx_from_diffusers(name_or_path: str, dtype=jnp.float32, **model_overrides) -> tuple[PRX, dict]:
    """(model, params) from a diffusers PRX transformer directory, pipeline directory or hub id.

    `model.apply({'params': params}, x, t, text, text_mask)` takes x NHWC and t in [0, 1] (1 = noise).
    `model_overrides` set PRX fields that are not part of the weights (dtype of the compute,
    scan_layers, remat_policy, attention_impl).
    """
    directory = transformer_dir(name_or_path)
    model = PRX(**prx_config(directory), **{"dtype": dtype, **model_overrides})
    params = params_from_state_dict(Checkpoint(directory).read_all(), model, source=str(directory))
    return model, jax.tree.map(lambda x: jnp.asarray(x, model.param_dtype), params)


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


def prx_to_diffusers(model: PRX, params: dict, path: str, max_shard_bytes: int = 5 << 30) -> storage.Path:
    """Writes `params` of `model` as a directory `PRXTransformer2DModel.from_pretrained` loads (local or gs://).

    Weights are float32, in shards of at most `max_shard_bytes` with an index when they exceed it.
    """
    if model.pos_embed != "rope_2d" or model.resolution_tokens:
        raise ConfigError(f"diffusers' {CLASS_NAME} has integer RoPE positions and no resolution tokens; this model "
                          f"has pos_embed={model.pos_embed}{' and resolution tokens' if model.resolution_tokens else ''}"
                          ", so it cannot be exported")
    directory = storage.resolve(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": CLASS_NAME, **{k: getattr(model, k) for k in CONFIG_FIELDS}}
    config["axes_dim"] = list(model.rope_axes_dim)
    tensors = state_dict_from_params(params, model)
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


def _model_card(config, step: int, what: str) -> str:
    """README.md of an exported run: the inputs its transformer was trained on, which a pipeline must feed it."""
    text, layer = config.text_encoder, config.text_encoder.layer
    hidden = {-1: "last layer's hidden states", 0: "embedding layer's output"}.get(
        layer, f"hidden states after layer {layer}")
    expects = {"text_encoder": {k: text[k] for k in ("name", "path", "tokenizer", "layer", "max_length", "clean")},
               "autoencoder": config.autoencoder.name, "latent_normalization": config.latents.normalization,
               "resolution": config.data.resolution}
    return (f"# {CLASS_NAME} exported by t2ijax\n\nStep {step} ({what}) of a t2ijax training run.\n\n"
            f"It reads the {hidden} (layer {layer}) of the text encoder `{text.path or text.name}`, at most "
            f"{text.max_length} tokens per caption, and latents of the autoencoder `{config.autoencoder.name}` "
            f"({config.latents.normalization} normalization). A pipeline that feeds it another text encoder, another "
            f"layer or another latent space gets noise.\n\n```json\n{json.dumps(expects, indent=1)}\n```\n")


def export_run(workdir: str, out: str, step: int | None = None, ema: bool = True) -> tuple[int, str]:
    """Writes checkpoint `step` of the run in `workdir` to `out`, with a README.md naming the text encoder, layer
    and latent space its transformer expects; returns (step, what was exported)."""
    from t2ijax.training.restore import load_run, load_run_config

    storage.check_bucket(out)
    config = load_run_config(workdir)
    if config.model.name != "prx":
        raise ConfigError(f"{workdir} trained config.model.name='{config.model.name}'; only prx exports to diffusers")
    run = load_run(workdir, step, config)
    use_ema = ema and run.state.ema_params is not None
    what = "EMA params" if use_ema else "params"
    directory = prx_to_diffusers(run.model, run.state.ema_params if use_ema else run.state.params, out)
    (directory / "README.md").write_text(_model_card(config, run.step, what))
    return run.step, what

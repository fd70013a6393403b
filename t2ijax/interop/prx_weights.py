"""diffusers' PRXTransformer2DModel tensor names <-> the Flax PRX params (t2ijax/interop/weights.py's table)."""
from collections.abc import Iterator

import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.interop import weights
from t2ijax.interop.weights import COPY, FUSED, HEADS_IN, linear
from t2ijax.models.prx import PRX

CLASS_NAME = "PRXTransformer2DModel"
MODEL = PRX
# PRXTransformer2DModel.__init__ arguments, each a PRX field of the same name and meaning.
CONFIG_FIELDS = ("in_channels", "patch_size", "context_in_dim", "hidden_size", "mlp_ratio", "num_heads", "depth",
                 "axes_dim", "theta", "time_factor", "time_max_period", "bottleneck_size", "resolution_embeds")


def model_fields(config: dict) -> dict:
    """The PRX fields of a diffusers config.json (diffusers' defaults for those it leaves out)."""
    return {k: config[k] for k in CONFIG_FIELDS if k in config and config[k] is not None}


def diffusers_config(model: PRX) -> dict:
    """`model`'s config.json; a ConfigError for what diffusers' class cannot hold."""
    if model.pos_embed != "rope_2d" or model.resolution_tokens:
        tokens = " and resolution tokens" if model.resolution_tokens else ""
        raise ConfigError(f"diffusers' {CLASS_NAME} has integer RoPE positions and no resolution tokens; this model "
                          f"has pos_embed={model.pos_embed}{tokens}, so it cannot be exported")
    return {"_class_name": CLASS_NAME, **{k: getattr(model, k) for k in CONFIG_FIELDS},
            "axes_dim": list(model.rope_axes_dim)}


def _block(i: int) -> Iterator[weights.Entry]:
    """Entries of block i, with Flax paths relative to the block."""
    t = f"blocks.{i}."
    yield from linear(t + "modulation.lin", ("modulation",))
    yield t + "attention.img_qkv_proj.weight", ("attention", "img_qkv", "kernel"), FUSED, 3
    yield t + "attention.txt_kv_proj.weight", ("attention", "txt_kv", "kernel"), FUSED, 2
    for norm in ("norm_q", "norm_k", "norm_added_k"):
        yield t + f"attention.{norm}.weight", ("attention", norm, "scale"), COPY, 0
    yield t + "attention.to_out.0.weight", ("attention", "to_out", "kernel"), HEADS_IN, 0
    for proj in ("gate_proj", "up_proj", "down_proj"):
        yield from linear(t + proj, (proj,), bias=False)


def _top(model: PRX) -> Iterator[weights.Entry]:
    yield from linear("txt_in", ("txt_in",))
    yield from linear("time_in.in_layer", ("time_in", "in_layer"))
    yield from linear("time_in.out_layer", ("time_in", "out_layer"))
    yield from linear("final_layer.adaLN_modulation.1", ("final_layer", "adaLN_modulation"))
    yield from linear("final_layer.linear", ("final_layer", "linear"))
    if model.bottleneck_size is not None:
        yield from linear("img_in.0", ("img_in_bottleneck",))
        yield from linear("img_in.1", ("img_in",))
    else:
        yield from linear("img_in", ("img_in",))
    if model.resolution_embeds:
        yield from linear("resolution_embedder.mlp.in_layer", ("resolution_embedder", "in_layer"))
        yield from linear("resolution_embedder.mlp.out_layer", ("resolution_embedder", "out_layer"))


def table(model: PRX) -> weights.Table:
    return weights.Table(list(_top(model)), (weights.Stack("blocks", model.depth, _block),),
                         hint="depth, bottleneck_size and resolution_embeds")


def params_from_state_dict(state_dict: dict[str, np.ndarray], model: PRX, source: str = "the state dict") -> dict:
    """diffusers PRX tensors -> `model`'s param tree; a ConfigError names a missing, extra or misshapen tensor."""
    return weights.params_from_state_dict(state_dict, model, table(model), source)


def state_dict_from_params(params: dict, model: PRX) -> dict[str, np.ndarray]:
    """`model`'s params -> diffusers PRX tensors (numpy float32, torch names)."""
    return weights.state_dict_from_params(params, model, table(model))

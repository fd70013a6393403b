"""diffusers' SD3Transformer2DModel <-> the Flax MMDiT: config.json fields and tensor names
(t2ijax/interop/weights.py's table).

The table reads two tensors SD3 stores differently from the Flax layout after a step of its own:
each stream's separate q/k/v Linears are joined into one fused tensor (weights stacked along their
output axis, biases as [3, heads, head_dim]), and the patch embedding's Conv2d kernel [D, C, p, p] is
flattened to a Linear over patchify's (c, p, q) features. The fixed sin-cos table SD3 keeps as a buffer
(pos_embed.pos_embed) is checked against MMDiT's on import and written from it on export.
"""
from collections.abc import Iterator

import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.interop import weights
from t2ijax.interop.weights import COPY, FUSED, HEADS_IN, linear
from t2ijax.models.layers import sincos_2d
from t2ijax.models.mmdit import MMDiT, sd3_positions

CLASS_NAME = "SD3Transformer2DModel"
MODEL = MMDiT
POSITIONS = "pos_embed.pos_embed"
PATCH_EMBED = "pos_embed.proj.weight"
# (diffusers' projections of a stream, the fused name the table reads)
STREAMS = ((("to_q", "to_k", "to_v"), "to_qkv"), (("add_q_proj", "add_k_proj", "add_v_proj"), "add_qkv_proj"))
# SD3Transformer2DModel.__init__'s defaults, for a config.json that leaves a field out.
DEFAULTS = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=18, attention_head_dim=64,
                num_attention_heads=18, joint_attention_dim=4096, caption_projection_dim=1152,
                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=96, dual_attention_layers=(),
                qk_norm=None)


def model_fields(config: dict) -> dict:
    """MMDiT fields from an SD3Transformer2DModel config.json; a ConfigError names an option MMDiT lacks."""
    c = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    hidden_size = c["num_attention_heads"] * c["attention_head_dim"]
    if c["dual_attention_layers"]:
        raise ConfigError(f"{CLASS_NAME} with dual_attention_layers={list(c['dual_attention_layers'])} (SD3.5's "
                          "second image attention) is not supported; t2ijax's mmdit is SD3.0's (no dual attention)")
    if c["qk_norm"] not in (None, "rms_norm"):
        raise ConfigError(f"{CLASS_NAME} with qk_norm={c['qk_norm']!r} is not supported; mmdit has qk_norm None "
                          "or 'rms_norm'")
    if c["caption_projection_dim"] != hidden_size:
        raise ConfigError(f"{CLASS_NAME} with caption_projection_dim={c['caption_projection_dim']} is not supported: "
                          f"its blocks need the text width num_attention_heads * attention_head_dim = {hidden_size}")
    if c["out_channels"] not in (None, c["in_channels"]):
        raise ConfigError(f"{CLASS_NAME} with out_channels={c['out_channels']} != in_channels={c['in_channels']} "
                          "is not supported: a t2ijax denoiser predicts in its input's channels")
    if c["pos_embed_max_size"] is None:
        raise ConfigError(f"{CLASS_NAME} with pos_embed_max_size=None is not supported; SD3's checkpoints set it")
    return dict(in_channels=c["in_channels"], patch_size=c["patch_size"], context_in_dim=c["joint_attention_dim"],
                pooled_projection_dim=c["pooled_projection_dim"], hidden_size=hidden_size,
                num_heads=c["num_attention_heads"], depth=c["num_layers"], qk_norm=c["qk_norm"] == "rms_norm",
                sample_size=c["sample_size"], pos_embed_max_size=c["pos_embed_max_size"])


def diffusers_config(model: MMDiT) -> dict:
    """The config.json of `model` as an SD3Transformer2DModel; a ConfigError if diffusers' class cannot hold it."""
    if model.mlp_ratio != 4.0:
        raise ConfigError(f"diffusers' {CLASS_NAME} has mlp_ratio 4; this model has {model.mlp_ratio}, so it cannot "
                          "be exported")
    return {"_class_name": CLASS_NAME, "sample_size": model.sample_size, "patch_size": model.patch_size,
            "in_channels": model.in_channels, "num_layers": model.depth, "attention_head_dim": model.head_dim,
            "num_attention_heads": model.num_heads, "joint_attention_dim": model.context_in_dim,
            "caption_projection_dim": model.hidden_size, "pooled_projection_dim": model.pooled_projection_dim,
            "out_channels": model.in_channels, "pos_embed_max_size": model.pos_embed_max_size,
            "dual_attention_layers": [], "qk_norm": "rms_norm" if model.qk_norm else None}


def _block(model: MMDiT, i: int) -> Iterator[weights.Entry]:
    """Entries of transformer block i, with Flax paths relative to the block."""
    t, last = f"transformer_blocks.{i}.", i == model.depth - 1
    yield from linear(t + "norm1.linear", ("img_mod",))
    yield from linear(t + "norm1_context.linear", ("txt_mod",))
    for (_, fused), stream in zip(STREAMS, ("img", "txt")):
        yield from linear(t + f"attn.{fused}", ("attention", f"{stream}_qkv"), layout=FUSED, n=3)
    if model.qk_norm:
        for norm in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            yield t + f"attn.{norm}.weight", ("attention", norm, "scale"), COPY, 0
    yield from linear(t + "attn.to_out.0", ("attention", "img_out"), layout=HEADS_IN)
    yield from linear(t + "ff.net.0.proj", ("img_mlp", "fc1"))
    yield from linear(t + "ff.net.2", ("img_mlp", "fc2"))
    if not last:
        yield from linear(t + "attn.to_add_out", ("attention", "txt_out"), layout=HEADS_IN)
        yield from linear(t + "ff_context.net.0.proj", ("txt_mlp", "fc1"))
        yield from linear(t + "ff_context.net.2", ("txt_mlp", "fc2"))


def table(model: MMDiT) -> weights.Table:
    top = [*linear("pos_embed.proj", ("img_in",)),
           *linear("context_embedder", ("txt_in",)),
           *linear("time_text_embed.timestep_embedder.linear_1", ("time_in", "in_layer")),
           *linear("time_text_embed.timestep_embedder.linear_2", ("time_in", "out_layer")),
           *linear("time_text_embed.text_embedder.linear_1", ("pooled_in", "in_layer")),
           *linear("time_text_embed.text_embedder.linear_2", ("pooled_in", "out_layer")),
           *linear("norm_out.linear", ("final_mod",)),
           *linear("proj_out", ("final_linear",))]
    uniform = (weights.Stack("blocks", model.depth - 1, lambda i: _block(model, i)),) if model.depth > 1 else ()
    last = weights.Stack("final_block", 1, lambda _: _block(model, model.depth - 1))
    return weights.Table(top, (*uniform, last), hint="num_layers and qk_norm")


def positions(model: MMDiT) -> np.ndarray:
    """SD3's whole pos_embed buffer [1, max^2, D] for `model`."""
    positions = sd3_positions(model.pos_embed_max_size, model.sample_size // model.patch_size)
    return sincos_2d(positions, positions, model.hidden_size)[None]


def params_from_state_dict(state_dict: dict[str, np.ndarray], model: MMDiT, source: str = "the state dict") -> dict:
    """diffusers SD3 tensors -> `model`'s param tree; a ConfigError names a missing, extra or misshapen tensor."""
    tensors = dict(state_dict)
    buffer, table_ = tensors.pop(POSITIONS, None), positions(model)
    if buffer is not None and (np.shape(buffer) != table_.shape or not np.allclose(buffer, table_, rtol=0, atol=1e-6)):
        raise ConfigError(f"{source}: '{POSITIONS}' is not the sin-cos table its config (sample_size, patch_size, "
                          "pos_embed_max_size) gives; t2ijax's mmdit computes it and cannot take a learned one")

    d, p = model.hidden_size, model.patch_size
    patch_embed = weights.take(tensors, PATCH_EMBED, model, source, (d, model.in_channels, p, p))
    tensors[PATCH_EMBED] = patch_embed.reshape(d, -1)
    for i in range(model.depth):
        for names, fused in STREAMS:
            for part, shape in (("weight", (d, d)), ("bias", (d,))):
                t = f"transformer_blocks.{i}.attn."
                weights.join(tensors, f"{t}{fused}.{part}", tuple(f"{t}{name}.{part}" for name in names), model,
                             source, shape)
    return weights.params_from_state_dict(tensors, model, table(model), source)


def state_dict_from_params(params: dict, model: MMDiT) -> dict[str, np.ndarray]:
    """`model`'s params -> diffusers SD3 tensors (numpy float32, torch names), the inverse of the above."""
    tensors = weights.state_dict_from_params(params, model, table(model))
    p, c = model.patch_size, model.in_channels
    tensors[PATCH_EMBED] = tensors[PATCH_EMBED].reshape(model.hidden_size, c, p, p)
    for i in range(model.depth):
        for names, fused in STREAMS:
            for part in ("weight", "bias"):
                t = f"transformer_blocks.{i}.attn."
                weights.split(tensors, f"{t}{fused}.{part}", tuple(f"{t}{name}.{part}" for name in names))
    tensors[POSITIONS] = positions(model)
    return tensors

"""diffusers' FluxTransformer2DModel <-> the Flax Flux: config.json fields and tensor names
(t2ijax/interop/weights.py's table).

Two kinds of tensor are rearranged before the table reads them (and back after export): each
attention's separate q/k/v Linears are joined into one fused tensor (weights stacked along their
output axis, as diffusers' own fuse_qkv_projections does, biases as [3, heads, head_dim]), and a
single-stream block's proj_out, one Linear over [attention ‖ MLP] features, is cut into the two
kernels Flux holds (the columns of the attention and of the MLP; the bias goes with the MLP's).
"""
from collections.abc import Iterator

import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.interop import weights
from t2ijax.interop.weights import COPY, FUSED, HEADS_IN, KERNEL, linear
from t2ijax.models.flux import Flux

CLASS_NAME = "FluxTransformer2DModel"
MODEL = Flux
PACKING = 2  # Flux's pipelines pack latents 2x2 before the transformer; t2ijax's Flux packs them itself
# FluxTransformer2DModel.__init__'s defaults, for a config.json that leaves a field out.
DEFAULTS = dict(patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
                attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                guidance_embeds=False, axes_dims_rope=(16, 56, 56))
QKV = ("to_q", "to_k", "to_v")
ADDED_QKV = ("add_q_proj", "add_k_proj", "add_v_proj")


def model_fields(config: dict) -> dict:
    """Flux fields from a FluxTransformer2DModel config.json; a ConfigError names an option Flux lacks."""
    c = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    if c["patch_size"] != 1:
        raise ConfigError(f"{CLASS_NAME} with patch_size={c['patch_size']} is not supported: Flux's transformer "
                          f"takes latents its pipeline packed {PACKING}x{PACKING} (patch_size 1)")
    if c["in_channels"] % PACKING**2:
        raise ConfigError(f"{CLASS_NAME} with in_channels={c['in_channels']} is not supported: packed latents have "
                          f"{PACKING}x{PACKING} x the latent channels")
    if c["out_channels"] not in (None, c["in_channels"]):
        raise ConfigError(f"{CLASS_NAME} with out_channels={c['out_channels']} != in_channels={c['in_channels']} "
                          "is not supported: a t2ijax denoiser predicts in its input's channels")
    return dict(in_channels=c["in_channels"] // PACKING**2, patch_size=PACKING,
                context_in_dim=c["joint_attention_dim"], pooled_projection_dim=c["pooled_projection_dim"],
                hidden_size=c["num_attention_heads"] * c["attention_head_dim"], num_heads=c["num_attention_heads"],
                depth=c["num_layers"] + c["num_single_layers"], double_blocks=c["num_layers"],
                axes_dim=tuple(c["axes_dims_rope"]), guidance_embeds=bool(c["guidance_embeds"]))


def diffusers_config(model: Flux) -> dict:
    """The config.json of `model` as a FluxTransformer2DModel; a ConfigError if diffusers' class cannot hold it."""
    fixed = dict(patch_size=(PACKING, "packs latents 2x2"), mlp_ratio=(4.0, "has mlp_ratio 4"),
                 theta=(10000.0, "has RoPE theta 10000"))
    for field, (value, what) in fixed.items():
        if getattr(model, field) != value:
            raise ConfigError(f"diffusers' Flux {what}; this model has {field}={getattr(model, field)}, so it cannot "
                              "be exported")
    channels = model.in_channels * model.patch_size**2
    return {"_class_name": CLASS_NAME, "patch_size": 1, "in_channels": channels, "out_channels": channels,
            "num_layers": model.double_blocks, "num_single_layers": model.depth - model.double_blocks,
            "attention_head_dim": model.head_dim, "num_attention_heads": model.num_heads,
            "joint_attention_dim": model.context_in_dim, "pooled_projection_dim": model.pooled_projection_dim,
            "guidance_embeds": model.guidance_embeds, "axes_dims_rope": list(model.axes_dim)}


def _norms(t: str, pairs) -> Iterator[weights.Entry]:
    for torch_norm, flax_norm in pairs:
        yield f"{t}attn.{torch_norm}.weight", (flax_norm, "scale"), COPY, 0


def _double_block(i: int) -> Iterator[weights.Entry]:
    """Entries of double-stream block i, with Flax paths relative to the block."""
    t = f"transformer_blocks.{i}."
    yield from linear(t + "norm1.linear", ("img_mod",))
    yield from linear(t + "norm1_context.linear", ("txt_mod",))
    yield from linear(t + "attn.to_qkv", ("img_qkv",), layout=FUSED, n=3)
    yield from linear(t + "attn.to_added_qkv", ("txt_qkv",), layout=FUSED, n=3)
    yield from _norms(t, (("norm_q", "img_norm_q"), ("norm_k", "img_norm_k"), ("norm_added_q", "txt_norm_q"),
                          ("norm_added_k", "txt_norm_k")))
    yield from linear(t + "attn.to_out.0", ("img_out",), layout=HEADS_IN)
    yield from linear(t + "attn.to_add_out", ("txt_out",), layout=HEADS_IN)
    for torch_ff, stream in (("ff", "img_mlp"), ("ff_context", "txt_mlp")):
        yield from linear(t + f"{torch_ff}.net.0.proj", (stream, "fc1"))
        yield from linear(t + f"{torch_ff}.net.2", (stream, "fc2"))


def _proj_out_parts(t: str, hidden_size: int) -> tuple[str, str]:
    """The names the table gives the attention's and the MLP's columns of single block `t`'s proj_out."""
    return f"{t}proj_out.weight[:, :{hidden_size}]", f"{t}proj_out.weight[:, {hidden_size}:]"


def _single_block(model: Flux, i: int) -> Iterator[weights.Entry]:
    """Entries of single-stream block i (diffusers' index), with Flax paths relative to the block."""
    t = f"single_transformer_blocks.{i}."
    attn_cols, mlp_cols = _proj_out_parts(t, model.hidden_size)
    yield from linear(t + "norm.linear", ("mod",))
    yield from linear(t + "attn.to_qkv", ("qkv",), layout=FUSED, n=3)
    yield from _norms(t, (("norm_q", "norm_q"), ("norm_k", "norm_k")))
    yield from linear(t + "proj_mlp", ("proj_mlp",))
    yield attn_cols, ("attn_out", "kernel"), HEADS_IN, 0
    yield mlp_cols, ("mlp_out", "kernel"), KERNEL, 0
    yield t + "proj_out.bias", ("mlp_out", "bias"), COPY, 0


def table(model: Flux) -> weights.Table:
    top = [*linear("x_embedder", ("x_embedder",)), *linear("context_embedder", ("context_embedder",)),
           *linear("norm_out.linear", ("norm_out",)), *linear("proj_out", ("proj_out",))]
    for embedder in ("timestep_embedder", "text_embedder") + (("guidance_embedder",) if model.guidance_embeds else ()):
        top += [*linear(f"time_text_embed.{embedder}.linear_1", (embedder, "in_layer")),
                *linear(f"time_text_embed.{embedder}.linear_2", (embedder, "out_layer"))]
    stacks = (weights.Stack("double_blocks", model.double_blocks, _double_block),
              weights.Stack("single_blocks", model.depth - model.double_blocks, lambda i: _single_block(model, i)))
    return weights.Table(top, tuple(stack for stack in stacks if stack.count),
                         hint="num_layers, num_single_layers and guidance_embeds")


def _fused_groups(model: Flux) -> Iterator[tuple[str, tuple[str, ...], str]]:
    """(block prefix, diffusers' separate projections, the fused name the table reads) of every attention."""
    for i in range(model.double_blocks):
        yield f"transformer_blocks.{i}.attn.", QKV, "to_qkv"
        yield f"transformer_blocks.{i}.attn.", ADDED_QKV, "to_added_qkv"
    for i in range(model.depth - model.double_blocks):
        yield f"single_transformer_blocks.{i}.attn.", QKV, "to_qkv"


def params_from_state_dict(state_dict: dict[str, np.ndarray], model: Flux, source: str = "the state dict") -> dict:
    """diffusers Flux tensors -> `model`'s param tree; a ConfigError names a missing, extra or misshapen tensor."""
    tensors = dict(state_dict)
    for prefix, names, fused in _fused_groups(model):
        for part in ("weight", "bias"):
            weights.join(tensors, f"{prefix}{fused}.{part}", tuple(f"{prefix}{name}.{part}" for name in names), model,
                         source)
    for i in range(model.depth - model.double_blocks):
        t = f"single_transformer_blocks.{i}."
        proj_out = weights.take(tensors, t + "proj_out.weight", model, source)
        tensors.update(zip(_proj_out_parts(t, model.hidden_size), np.split(proj_out, [model.hidden_size], axis=1)))
    return weights.params_from_state_dict(tensors, model, table(model), source)


def state_dict_from_params(params: dict, model: Flux) -> dict[str, np.ndarray]:
    """`model`'s params -> diffusers Flux tensors (numpy float32, torch names), the inverse of the above."""
    tensors = weights.state_dict_from_params(params, model, table(model))
    for prefix, names, fused in _fused_groups(model):
        for part in ("weight", "bias"):
            weights.split(tensors, f"{prefix}{fused}.{part}", tuple(f"{prefix}{name}.{part}" for name in names))
    for i in range(model.depth - model.double_blocks):
        t = f"single_transformer_blocks.{i}."
        tensors[t + "proj_out.weight"] = np.concatenate([tensors.pop(name) for name in
                                                         _proj_out_parts(t, model.hidden_size)], axis=1)
    return tensors

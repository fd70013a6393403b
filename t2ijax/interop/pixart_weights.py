"""diffusers' PixArtTransformer2DModel <-> t2ijax's DiTCross: its config.json and its tensors.

diffusers keeps the self-attention's to_q, to_k, to_v (and the cross-attention's to_k, to_v)
apart where DiTCross fuses them, and its patch embedding is a Conv2d; `_fuse` rewrites those
tensors into the names diffusers' own fuse_qkv_projections gives them (to_qkv, to_kv) and a
Linear's shape, so that the rest maps one tensor to one param through weights.py's table.
A checkpoint with learned sigma (out_channels = 2 * in_channels, PixArt-alpha's and -Sigma's
releases) imports with the variance half of proj_out dropped: t2ijax predicts the image only.
"""
from collections.abc import Iterator

import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.interop import weights
from t2ijax.interop.weights import COPY, FUSED, HEADS_IN, linear
from t2ijax.models.build import pixart_interpolation
from t2ijax.models.dit_cross import DiTCross

CLASS_NAME = "PixArtTransformer2DModel"
MODEL = DiTCross
# PixArtTransformer2DModel.__init__'s defaults for the arguments read here
DEFAULTS = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
                dropout=0.0, cross_attention_dim=1152, attention_bias=True, sample_size=128, patch_size=2,
                activation_fn="gelu-approximate", norm_type="ada_norm_single", norm_elementwise_affine=False,
                norm_eps=1e-6, interpolation_scale=None, use_additional_conditions=None, caption_channels=None,
                attention_type="default")
# what DiTCross implements of the arguments that have a choice
SUPPORTED = dict(dropout=0.0, attention_bias=True, activation_fn="gelu-approximate", norm_type="ada_norm_single",
                 norm_elementwise_affine=False, norm_eps=1e-6, attention_type="default")
MLP_RATIO = 4.0  # diffusers' FeedForward


def model_fields(config: dict) -> dict:
    """DiTCross fields of a PixArtTransformer2DModel config.json; ConfigError for what DiTCross lacks."""
    c = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    for key, value in SUPPORTED.items():
        if c[key] != value:
            raise ConfigError(f"{CLASS_NAME} with {key}={c[key]!r} is not supported (dit_cross implements {value!r})")
    additional = c["use_additional_conditions"]
    if additional or (additional is None and c["sample_size"] == 128):  # diffusers' default for 128
        raise ConfigError(f"{CLASS_NAME} with use_additional_conditions (resolution and aspect-ratio embeddings, "
                          "PixArt-alpha 1024-MS) is not supported")
    if c["caption_channels"] is None:
        raise ConfigError(f"{CLASS_NAME} without caption_channels (no caption projection) is not supported")
    hidden = c["num_attention_heads"] * c["attention_head_dim"]
    if c["cross_attention_dim"] != hidden:
        raise ConfigError(f"{CLASS_NAME} with cross_attention_dim={c['cross_attention_dim']} is not supported: the "
                          f"caption projection gives num_attention_heads * attention_head_dim = {hidden} features")
    if c["out_channels"] not in (None, c["in_channels"], 2 * c["in_channels"]):
        raise ConfigError(f"{CLASS_NAME} with out_channels={c['out_channels']} is not supported: dit_cross predicts "
                          f"in_channels={c['in_channels']} (a learned sigma half, 2 * in_channels, is dropped)")
    scale = c["interpolation_scale"]
    return dict(in_channels=c["in_channels"], patch_size=c["patch_size"], context_in_dim=c["caption_channels"],
                hidden_size=hidden, num_heads=c["num_attention_heads"], depth=c["num_layers"], mlp_ratio=MLP_RATIO,
                sample_size=c["sample_size"],
                interpolation_scale=pixart_interpolation(c["sample_size"]) if scale is None else float(scale))


def diffusers_config(model: DiTCross) -> dict:
    """The config.json of a PixArtTransformer2DModel equal to `model`."""
    if model.mlp_ratio != MLP_RATIO:
        raise ConfigError(f"diffusers' {CLASS_NAME} has a {MLP_RATIO:g}x MLP; this dit_cross has mlp_ratio="
                          f"{model.mlp_ratio:g}, so it cannot be exported")
    return {"_class_name": CLASS_NAME, **SUPPORTED, "num_attention_heads": model.num_heads,
            "attention_head_dim": model.head_dim, "in_channels": model.in_channels,
            "out_channels": model.in_channels, "num_layers": model.depth, "cross_attention_dim": model.hidden_size,
            "caption_channels": model.context_in_dim, "sample_size": model.sample_size,
            "patch_size": model.patch_size, "interpolation_scale": model.interpolation_scale,
            "use_additional_conditions": False}


def _block(i: int) -> Iterator[weights.Entry]:
    """Entries of block i (fused names, see _fuse), with Flax paths relative to the block."""
    t = f"transformer_blocks.{i}."
    yield t + "scale_shift_table", ("scale_shift_table",), COPY, 0
    for attn, flax_name, fused, n in (("attn1", "self_attention", "qkv", 3), ("attn2", "cross_attention", "kv", 2)):
        yield from linear(f"{t}{attn}.to_{fused}", (flax_name, fused), layout=FUSED, n=n)
        yield from linear(f"{t}{attn}.to_out.0", (flax_name, "out"), layout=HEADS_IN)
    yield from linear(t + "attn2.to_q", ("cross_attention", "q"))
    yield from linear(t + "ff.net.0.proj", ("mlp", "fc1"))
    yield from linear(t + "ff.net.2", ("mlp", "fc2"))


def _top() -> Iterator[weights.Entry]:
    yield from linear("pos_embed.proj", ("patch_embed",))
    yield from linear("caption_projection.linear_1", ("caption_in",))
    yield from linear("caption_projection.linear_2", ("caption_out",))
    yield from linear("adaln_single.emb.timestep_embedder.linear_1", ("time_in", "in_layer"))
    yield from linear("adaln_single.emb.timestep_embedder.linear_2", ("time_in", "out_layer"))
    yield from linear("adaln_single.linear", ("t_block",))
    yield "scale_shift_table", ("scale_shift_table",), COPY, 0
    yield from linear("proj_out", ("proj_out",))


def table(model: DiTCross) -> weights.Table:
    return weights.Table(top=list(_top()), stacks=(weights.Stack("blocks", model.depth, _block),),
                         hint="num_layers")


def _fused(i: int) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(fused name, the diffusers names it joins) of block i's attention projections."""
    t = f"transformer_blocks.{i}."
    for attn, parts in (("attn1", "qkv"), ("attn2", "kv")):
        for kind in ("weight", "bias"):
            yield f"{t}{attn}.to_{parts}.{kind}", tuple(f"{t}{attn}.to_{part}.{kind}" for part in parts)


def _fuse(state_dict: dict[str, np.ndarray], model: DiTCross, source: str) -> dict[str, np.ndarray]:
    """diffusers' tensors -> the table's: q/k/v joined, biases [n, heads, head_dim], the patch Conv2d
    [hidden, c, p, q] as a Linear over patchify's (c, p, q) features, a learned sigma half dropped."""
    out = dict(state_dict)
    take = lambda name: weights.take(out, name, model, source)
    for i in range(model.depth):
        for fused, parts in _fused(i):
            weights.join(out, fused, parts, model, source)
    conv = take("pos_embed.proj.weight")
    out["pos_embed.proj.weight"] = conv.reshape(conv.shape[0], -1)
    p, c = model.patch_size, model.in_channels
    for name in ("proj_out.weight", "proj_out.bias"):
        tensor = take(name)
        if tensor.shape[0] == 2 * p * p * c:  # features (p, q, [image c | sigma c])
            tensor = tensor.reshape(p, p, 2 * c, -1)[:, :, :c].reshape(p * p * c, *tensor.shape[1:])
        out[name] = tensor
    return out


def _split(tensors: dict[str, np.ndarray], model: DiTCross) -> dict[str, np.ndarray]:
    """The inverse of _fuse (out_channels = in_channels)."""
    out = dict(tensors)
    for i in range(model.depth):
        for fused, parts in _fused(i):
            weights.split(out, fused, parts)
    conv = out["pos_embed.proj.weight"]
    out["pos_embed.proj.weight"] = conv.reshape(conv.shape[0], model.in_channels, model.patch_size, model.patch_size)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def params_from_state_dict(state_dict: dict[str, np.ndarray], model: DiTCross, source: str = "the state dict") -> dict:
    """A PixArtTransformer2DModel's tensors (numpy, diffusers names) -> `model`'s param tree."""
    return weights.params_from_state_dict(_fuse(state_dict, model, source), model, table(model), source)


def state_dict_from_params(params: dict, model: DiTCross) -> dict[str, np.ndarray]:
    """`model`'s params -> a PixArtTransformer2DModel's tensors (numpy float32, diffusers names)."""
    return _split(weights.state_dict_from_params(params, model, table(model)), model)

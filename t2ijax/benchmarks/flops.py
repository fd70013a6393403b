"""Model FLOPs of a denoiser, the numerator of MFU: PRX's counted from its layer shapes, the other
backbones' from the dot products in their traced forward pass.

Every matmul costs 2 * m * n * k (a multiply and an add per term), which is also how XLA's cost
analysis counts a dot. Elementwise work (norms, softmax, RoPE, activations, bias adds) is not model
FLOPs, nor is remat's recomputation.
"""
import math

import jax
import jax.extend.core
import jax.numpy as jnp

from t2ijax.errors import ConfigError
from t2ijax.models.prx import PRX

TIMESTEP_FEATURES = 256  # PRX's sinusoidal embedding of t (and of the [height | width] pair)
SIZE_FEATURES = 128  # the sinusoidal embedding of one side that a resolution token starts from


def dense_flops(rows: int, fan_in: int, fan_out: int) -> int:
    """One [rows, fan_in] x [fan_in, fan_out] matmul."""
    return 2 * rows * fan_in * fan_out


def attention_flops(batch: int, heads: int, queries: int, keys: int, head_dim: int) -> int:
    """QK^T and PV of `heads` heads: two batched matmuls of 2 * queries * keys * head_dim each."""
    return 2 * 2 * batch * heads * queries * keys * head_dim


def _check_counted(model, height: int, width: int, text_length: int):
    if model.routing != "none":
        raise ConfigError(f"the FLOP counter counts the dense model, not routing={model.routing!r}; "
                          "count with routing.method='none'")
    if model.repa_projector != "none" and model.capture_layer >= 0:
        raise ConfigError(f"the FLOP counter does not count the REPA projector ({model.repa_projector!r}); "
                          "count with repa.weight=0")
    p = model.patch_size
    if min(height, width) < p or height % p or width % p or text_length < 0:
        raise ConfigError(f"a {height}x{width} latent with {text_length} text tokens does not fit the model: "
                          f"use sides that are positive multiples of patch_size {p} and text_length >= 0")


def _embedder_flops(batch: int, in_features: int, hidden: int) -> int:
    """MLPEmbedder: Linear(in_features -> hidden), SiLU, Linear(hidden -> hidden)."""
    return dense_flops(batch, in_features, hidden) + dense_flops(batch, hidden, hidden)


def _block_flops(model: PRX, batch: int, image_tokens: int, text_tokens: int) -> int:
    hidden, rows = model.hidden_size, batch * image_tokens
    mlp_dim = int(hidden * model.mlp_ratio)
    return (dense_flops(batch, hidden, 6 * hidden)  # adaLN modulation
            + dense_flops(rows, hidden, 3 * hidden)  # image q, k, v
            + dense_flops(batch * text_tokens, hidden, 2 * hidden)  # text k, v
            + attention_flops(batch, model.num_heads, image_tokens, text_tokens + image_tokens, model.head_dim)
            + dense_flops(rows, hidden, hidden)  # attention output
            + 2 * dense_flops(rows, hidden, mlp_dim)  # GeGLU gate and up
            + dense_flops(rows, mlp_dim, hidden))  # GeGLU down


def forward_flops(model, batch: int, height: int, width: int, text_length: int) -> int:
    """Matmul and attention FLOPs of one forward pass of `model` on a [batch, height, width, in_channels]
    latent and [batch, text_length, context_in_dim] text (padding tokens cost as much as real ones)."""
    _check_counted(model, height, width, text_length)
    if not isinstance(model, PRX):
        f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
        inputs = (f32(batch, height, width, model.in_channels), f32(batch), f32(batch, text_length,
                  model.context_in_dim), jax.ShapeDtypeStruct((batch, text_length), jnp.bool_))
        params = jax.eval_shape(model.init, jax.random.key(0), *inputs)
        return dot_flops(model.apply, params, *inputs)
    hidden, p = model.hidden_size, model.patch_size
    image_tokens, patch_features = (height // p) * (width // p), model.in_channels * p * p
    rows = batch * image_tokens
    text_tokens = text_length + 2 * model.resolution_tokens  # a height and a width token join the text

    if model.bottleneck_size is None:
        patch_in = dense_flops(rows, patch_features, hidden)
    else:
        patch_in = (dense_flops(rows, patch_features, model.bottleneck_size)
                    + dense_flops(rows, model.bottleneck_size, hidden))
    conditioning = (dense_flops(batch * text_length, model.context_in_dim, hidden)
                    + _embedder_flops(batch, TIMESTEP_FEATURES, hidden)
                    + model.resolution_embeds * _embedder_flops(batch, TIMESTEP_FEATURES, hidden)
                    + model.resolution_tokens * 2 * _embedder_flops(batch, SIZE_FEATURES, hidden))
    final = dense_flops(batch, hidden, 2 * hidden) + dense_flops(rows, hidden, patch_features)
    return patch_in + conditioning + model.depth * _block_flops(model, batch, image_tokens, text_tokens) + final


def train_step_flops(model, batch: int, height: int, width: int, text_length: int) -> int:
    """Model FLOPs of one training step: 3 x forward_flops, the backward pass costing two forwards'
    matmuls (the gradients of each matmul's input and of its weight).

    The convention MFU uses: it counts the input gradients of the first layers too, which a step skips,
    and not remat's recomputation of the forward, which a step does but which is not model FLOPs.
    """
    return 3 * forward_flops(model, batch, height, width, text_length)


def xla_flops(fn, *args) -> float:
    """XLA's cost-analysis FLOPs of jax.jit(fn)(*args) (arrays or jax.ShapeDtypeStruct), as compiled: every
    op, elementwise ones and remat's recomputation included.

    XLA counts a loop body once whatever its trip count: count a PRX with scan_layers=False.
    """
    return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def dot_flops(fn, *args) -> int:
    """FLOPs of every dot product jax.make_jaxpr(fn)(*args) traces, loop bodies times their trip count."""
    return _jaxpr_dot_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def _jaxpr_dot_flops(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":  # 2 x every lhs element x the rhs axes it is not summed over
            (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
            lhs, rhs = (v.aval.shape for v in eqn.invars)
            total += 2 * math.prod(lhs) * math.prod(d for i, d in enumerate(rhs) if i not in (*rhs_contract, *rhs_batch))
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += times * _jaxpr_dot_flops(sub)
    return total

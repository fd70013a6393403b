"""Pallas splash attention (TPU) for image queries over [text ‖ image] keys with padded text.

The text padding mask becomes segment ids (query 1, key 1 where real, 0 where padding or the
padding up to the kernel's 128-key blocks), so every query row keeps its image keys. Under a mesh
the kernel runs per device through shard_map (batch over the batch axes, heads over theirs): a
Pallas call cannot be split by the compiler. Off TPU it runs in Pallas' interpreter (tests only).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernels
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

BLOCK = 128  # the kernel's default block along queries and keys


def _per_device(q, k, v, key_mask):
    """q [B, Lq, H, D], k/v [B, Lk, H, D], key_mask [B, Lk] on one device -> [B, Lq, H, D]."""
    lq, lk, heads = q.shape[1], k.shape[1], q.shape[2]
    pad = -lk % BLOCK
    kernel = kernels.make_splash_mha(masks.MultiHeadMask([masks.FullMask((lq, lk + pad))] * heads),
                                     head_shards=1, q_seq_shards=1, interpret=jax.default_backend() != "tpu")
    pad_keys = lambda x: jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
    segments = kernels.SegmentIds(q=jnp.ones((q.shape[0], lq), jnp.int32),
                                  kv=jnp.pad(key_mask, ((0, 0), (0, pad))).astype(jnp.int32))
    scaled = (q / math.sqrt(q.shape[-1])).astype(q.dtype).transpose(0, 2, 1, 3)
    out = jax.vmap(kernel)(scaled, pad_keys(k), pad_keys(v), segment_ids=segments)
    return out.transpose(0, 2, 1, 3)


def splash_attention(q, k, v, key_mask):
    """Attention of q [B, Lq, heads, D] over k, v [B, Lk, heads, D] where key_mask [B, Lk];
    Lq must be a multiple of 128 (config validation checks the query token count)."""
    if q.shape[1] % BLOCK:
        raise ValueError(f"splash attention needs a multiple of {BLOCK} query tokens, got {q.shape[1]}")
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or math.prod(mesh.shape.values()) == 1:
        return _per_device(q, k, v, key_mask)
    tokens = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
    mask_spec = nn.logical_to_mesh_axes(("batch", "length"))
    ways = lambda axes: math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
    if q.shape[0] % ways(tokens[0]) or q.shape[2] % ways(tokens[2]):  # e.g. a short last evaluation batch
        return _per_device(q, k, v, key_mask)
    return jax.shard_map(_per_device, mesh=mesh, in_specs=(tokens, tokens, tokens, mask_spec), out_specs=tokens,
                         check_vma=False)(q, k, v, key_mask)


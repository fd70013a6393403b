"""Attention computed tile by tile over the keys with an online softmax (flash attention's algorithm) in
plain JAX, for backends without a fused kernel: XLA's CPU backend, and GPU or TPU shapes cuDNN or splash
refuse.

The forward pass keeps a running row maximum, normalizer and output over key tiles of at most
KEY_TILE keys and divides once at the end, so no [queries x keys] probability array is normalized or
stored. The backward pass (a custom VJP) recomputes each tile's probabilities from the saved row maximum
and normalizer. Logits, softmax statistics and accumulation are float32 whatever the inputs' dtype. A
padded key gets a logit of -1e30 as in layers.masked_attention's XLA path, so a query whose keys are all
padding averages them all there and here alike (and passes no gradient to q or k).
"""
import functools
import math

import jax
import jax.numpy as jnp

KEY_TILE = 512  # keys per tile: the CPU bench's 320 keys make one tile; longer sequences are cut into several
_PADDED = -1e30


def _tiles(keys: int, tile: int) -> list[slice]:
    return [slice(start, min(start + tile, keys)) for start in range(0, keys, tile)]


def _logits(q, k, bias, scale):
    """q [B, H, Lq, D], k [B, H, Lk, D], bias [B, Lk] -> scaled, masked float32 logits [B, H, Lq, Lk]."""
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    return logits * scale + bias[:, None, None, :]


def _forward(q, k, v, bias, tile):
    """Output [B, H, Lq, D] (float32) and the softmax's row maximum and normalizer [B, H, Lq]."""
    scale = 1 / math.sqrt(q.shape[-1])
    row_max = normalizer = out = None
    for keys in _tiles(k.shape[2], tile):
        logits = _logits(q, k[:, :, keys], bias[:, keys], scale)
        tile_max = logits.max(-1)
        new_max = tile_max if row_max is None else jnp.maximum(row_max, tile_max)
        p = jnp.exp(logits - new_max[..., None])
        pv = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), v[:, :, keys], preferred_element_type=jnp.float32)
        if row_max is None:
            normalizer, out = p.sum(-1), pv
        else:
            rescale = jnp.exp(row_max - new_max)
            normalizer = normalizer * rescale + p.sum(-1)
            out = out * rescale[..., None] + pv
        row_max = new_max
    return out / normalizer[..., None], row_max, normalizer


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, bias, tile):
    return _forward(q, k, v, bias, tile)[0].astype(q.dtype)


def _attention_fwd(q, k, v, bias, tile):
    out, row_max, normalizer = _forward(q, k, v, bias, tile)
    out = out.astype(q.dtype)
    return out, (q, k, v, bias, out, row_max, normalizer)


def _attention_bwd(tile, residuals, grad):
    q, k, v, bias, out, row_max, normalizer = residuals
    scale = 1 / math.sqrt(q.shape[-1])
    grad = grad.astype(v.dtype)
    # d softmax: dlogits = p * (dp - sum_k p dp), and sum_k p dp = sum_d grad * out
    delta = jnp.sum(grad.astype(jnp.float32) * out.astype(jnp.float32), -1)[..., None]
    # A query whose keys are all padding saw the constant _PADDED logits: no gradient reaches its q or k.
    has_keys = (row_max > _PADDED / 2)[..., None]
    dq, dk, dv = None, [], []
    for keys in _tiles(k.shape[2], tile):
        logits = _logits(q, k[:, :, keys], bias[:, keys], scale)
        p = jnp.exp(logits - row_max[..., None]) / normalizer[..., None]
        dv.append(jnp.einsum("bhqk,bhqd->bhkd", p.astype(v.dtype), grad, preferred_element_type=jnp.float32))
        dp = jnp.einsum("bhqd,bhkd->bhqk", grad, v[:, :, keys], preferred_element_type=jnp.float32)
        dlogits = jnp.where(has_keys, p * (dp - delta) * scale, 0).astype(q.dtype)
        dq_tile = jnp.einsum("bhqk,bhkd->bhqd", dlogits, k[:, :, keys], preferred_element_type=jnp.float32)
        dq = dq_tile if dq is None else dq + dq_tile
        dk.append(jnp.einsum("bhqk,bhqd->bhkd", dlogits, q, preferred_element_type=jnp.float32))
    join = lambda parts, like: jnp.concatenate(parts, axis=2).astype(like.dtype)
    return dq.astype(q.dtype), join(dk, k), join(dv, v), jnp.zeros_like(bias)


_attention.defvjp(_attention_fwd, _attention_bwd)


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array,
                    tile: int = KEY_TILE) -> jax.Array:
    """Attention of q [B, Lq, heads, D] over k, v [B, Lk, heads, D] where key_mask [B, Lk], in key tiles of
    at most `tile` keys; equal to layers.masked_attention's XLA path to float rounding."""
    heads_first = lambda x: x.transpose(0, 2, 1, 3)  # batched products over [B, heads] (layers.masked_attention)
    bias = jnp.where(key_mask, 0.0, _PADDED).astype(jnp.float32)
    return heads_first(_attention(heads_first(q), heads_first(k), heads_first(v), bias, tile))

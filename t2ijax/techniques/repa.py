"""REPA and iREPA: align the denoiser's tokens after one block with a frozen teacher's patch features.

The projector lives in the denoiser (t2ijax/models/prx.py builds it on the captured tokens, so its
params train and checkpoint with the rest); this module holds the projectors and the loss:

    loss = -weight * mean over tokens of cos(projector(h_tokens), teacher features at those tokens)

REPA's projector is an MLP; iREPA's a 3x3 convolution over the token grid, or (inside a routed
block range, where tokens are missing) attention with 2-D RoPE at each token's grid position, and
it normalizes the teacher features over tokens first.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from t2ijax.models.layers import Dense, apply_rope, axial_rope, masked_attention
from t2ijax.registry import names
from t2ijax.techniques import routing
from t2ijax.techniques.perceptual import cosine

PROJECTORS = names("repa.projector")


class MLPProjector(nn.Module):
    """Linear-SiLU-Linear-SiLU-Linear, hidden and output of the teacher's width."""

    features: int

    @nn.compact
    def __call__(self, h, tokens, grid):
        h = nn.silu(Dense(self.features, ("embed", None), name="layer_0")(h))
        h = nn.silu(Dense(self.features, (None, None), name="layer_1")(h))
        return Dense(self.features, (None, None), name="out")(h)


class ConvProjector(nn.Module):
    """3x3 convolution over the token grid; needs every token."""

    features: int

    @nn.compact
    def __call__(self, h, tokens, grid):
        b, n, d = h.shape
        out = nn.Conv(self.features, (3, 3), padding="SAME", name="conv")(h.reshape(b, *grid, d))
        return out.reshape(b, n, self.features)


class AttentionProjector(nn.Module):
    """Self-attention over the captured tokens with 2-D RoPE at their grid positions, then a linear map."""

    features: int
    num_heads: int

    @nn.compact
    def __call__(self, h, tokens, grid):
        b, n, d = h.shape
        heads = (self.num_heads, d // self.num_heads)
        qkv = Dense((3, *heads), ("embed", None, "heads", "kv"), name="qkv")(h)
        cos, sin = axial_rope(*grid, (heads[1] // 2, heads[1] // 2), theta=10_000.0)
        cos, sin = cos[tokens], sin[tokens]
        q, k = apply_rope(qkv[:, :, 0], cos, sin), apply_rope(qkv[:, :, 1], cos, sin)
        out = masked_attention(q, k, qkv[:, :, 2], jnp.ones((b, n), bool))
        out = Dense(d, ("heads", "kv", "embed"), n_in=2, name="attn_out")(out)
        return Dense(self.features, ("embed", None), name="out")(out)


def make_projector(kind: str, features: int, num_heads: int) -> nn.Module:
    if kind == "mlp":
        return MLPProjector(features, name="repa_projector")
    if kind == "conv":
        return ConvProjector(features, name="repa_projector")
    return AttentionProjector(features, num_heads, name="repa_projector")


def spatial_norm(features: jax.Array, eps: float = 1e-6) -> jax.Array:
    """iREPA's target normalization of [B, N, D] teacher features over the N tokens."""
    mean_over_channels = jnp.mean(features, axis=2, keepdims=True)
    centred = features - mean_over_channels * jnp.mean(features, axis=1, keepdims=True)
    return centred / (jnp.std(centred, axis=1, keepdims=True, ddof=1) + eps)


def alignment(projected: jax.Array, tokens: jax.Array, teacher: jax.Array, normalize: bool) -> jax.Array:
    """Per-example mean cosine similarity of `projected` [B, K, D] with the teacher features
    [B, gh, gw, D] at the token indices `tokens` [B, K] (all N tokens, or those a routed range kept)."""
    target = teacher.reshape(teacher.shape[0], -1, teacher.shape[-1]).astype(jnp.float32)
    if normalize:
        target = spatial_norm(target)
    target = routing.gather_tokens(target, tokens)
    return jnp.mean(cosine(projected.astype(jnp.float32), target), axis=-1)


def weight_at(cfg: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """config.repa.weight while step < stop_step (always when stop_step is 0), then 0."""
    if cfg.stop_step <= 0:
        return jnp.asarray(cfg.weight, jnp.float32)
    return jnp.where(step < cfg.stop_step, cfg.weight, 0.0).astype(jnp.float32)

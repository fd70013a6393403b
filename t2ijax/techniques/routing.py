"""Token routing for TREAD and SPRINT: which image tokens a block range sees, and moving them.

Each example keeps its own random subset of `num_kept(n, rate)` tokens, in their original order;
the others bypass the range. Indices are per example, so RoPE positions are gathered with them.
"""
import jax
import jax.numpy as jnp

from t2ijax.registry import names

METHODS = names("routing.method")


def num_kept(num_tokens: int, rate: float) -> int:
    """Tokens left after routing away round(rate * n) of them, at least one routed and one kept."""
    routed = min(max(round(num_tokens * rate), 1), num_tokens - 1)
    return num_tokens - routed


def choose_kept(rng: jax.Array, batch: int, num_tokens: int, rate: float) -> jax.Array:
    """[batch, num_kept] int32 token indices, sorted, drawn uniformly without replacement per example."""
    order = jnp.argsort(jax.random.uniform(rng, (batch, num_tokens)), axis=1)
    return jnp.sort(order[:, :num_kept(num_tokens, rate)], axis=1).astype(jnp.int32)


def gather_tokens(x: jax.Array, kept: jax.Array) -> jax.Array:
    """x [B, N, ...] -> [B, K, ...] at the kept indices [B, K]."""
    return jnp.take_along_axis(x, kept.reshape(kept.shape + (1,) * (x.ndim - 2)), axis=1)


def scatter_tokens(full: jax.Array, kept: jax.Array, part: jax.Array) -> jax.Array:
    """`full` [B, N, D] with the rows at `kept` [B, K] replaced by `part` [B, K, D]."""
    return full.at[jnp.arange(full.shape[0])[:, None], kept].set(part.astype(full.dtype))

"""Noising paths x_t = alpha(t) x0 + sigma(t) eps on t in [0, 1], t = 1 is pure noise."""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from t2ijax.registry import Registry

PATHS = Registry("diffusion.path")


@dataclasses.dataclass(frozen=True)
class Path:
    """A path given by alpha(t), sigma(t) and their time derivatives."""

    alpha: Callable[[jax.Array], jax.Array]
    sigma: Callable[[jax.Array], jax.Array]
    d_alpha: Callable[[jax.Array], jax.Array]
    d_sigma: Callable[[jax.Array], jax.Array]

    def interpolate(self, x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
        t = _expand(t, x0)
        return self.alpha(t) * x0 + self.sigma(t) * eps

    def velocity(self, x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
        """d x_t / d t: the target of velocity prediction (eps - x0 on the rectified-flow path)."""
        t = _expand(t, x0)
        return self.d_alpha(t) * x0 + self.d_sigma(t) * eps


def _expand(t: jax.Array, x: jax.Array) -> jax.Array:
    """Broadcasts per-example times [B] against NHWC data."""
    return jnp.reshape(t, t.shape + (1,) * (x.ndim - t.ndim))


PATHS.register("rectified_flow")(
    Path(
        alpha=lambda t: 1.0 - t,
        sigma=lambda t: t,
        d_alpha=lambda t: -jnp.ones_like(t),
        d_sigma=lambda t: jnp.ones_like(t),
    )
)

"""What the network predicts: a target a(t) x0 + b(t) eps, and exact conversions between any two.

Given x_t = alpha x0 + sigma eps, an output in any space fixes (x0, eps) by Cramer's rule with
det = alpha b - sigma a; every conversion goes through the velocity d x_t / d t, the samplers' input.
det is also the error scale used to move loss weights between spaces (see losses.py).
Functions take a PathPoint (paths.py) at times shaped to broadcast against the data.
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from t2ijax.diffusion.paths import PathPoint
from t2ijax.registry import Registry

PREDICTIONS = Registry("diffusion.prediction")


@dataclasses.dataclass(frozen=True)
class Prediction:
    coefficients: Callable[[PathPoint], tuple[jax.Array, jax.Array]]  # (a, b): the target is a x0 + b eps

    def target(self, point: PathPoint, x0: jax.Array, eps: jax.Array) -> jax.Array:
        a, b = self.coefficients(point)
        return a * x0 + b * eps

    def det(self, point: PathPoint) -> jax.Array:
        """alpha b - sigma a; zero where this output cannot determine x0 and eps."""
        a, b = self.coefficients(point)
        return point.alpha * b - point.sigma * a

    def split(self, point: PathPoint, output: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The (x0, eps) that give x_t and this output."""
        a, b = self.coefficients(point)
        det = point.alpha * b - point.sigma * a
        return (b * x_t - point.sigma * output) / det, (point.alpha * output - a * x_t) / det

    def to_velocity(self, point: PathPoint, output: jax.Array, x_t: jax.Array, t_min: float) -> jax.Array:
        del t_min
        return point.velocity(*self.split(point, output, x_t))

    def from_velocity(self, point: PathPoint, velocity: jax.Array, x_t: jax.Array) -> jax.Array:
        return self.target(point, *PREDICTIONS.get("velocity").split(point, velocity, x_t))


class X0Prediction(Prediction):
    """x0 prediction (JiT, PRX pixel space). Its velocity divides by sigma_t, which vanishes at t = 0:
    v = (sigma' x_t + (alpha' sigma - sigma' alpha) x0) / max(sigma_t, t_min), which on rectified flow
    is PRX's (x_t - x0) / max(t, t_min)."""

    def to_velocity(self, point, output, x_t, t_min):
        p = point
        return (p.d_sigma * x_t + (p.d_alpha * p.sigma - p.d_sigma * p.alpha) * output) / jnp.maximum(p.sigma, t_min)


def _salimans_v(p: PathPoint) -> tuple[jax.Array, jax.Array]:
    """v = alpha eps - sigma x0 (Salimans & Ho), divided by sqrt(alpha^2 + sigma^2) so that it is the
    angular velocity of x_t / |(alpha, sigma)| on any path (the plain v on VP paths)."""
    norm = jnp.sqrt(p.alpha**2 + p.sigma**2)
    return -p.sigma / norm, p.alpha / norm


PREDICTIONS.register("velocity")(Prediction(lambda p: (p.d_alpha, p.d_sigma)))
PREDICTIONS.register("epsilon")(Prediction(lambda p: (jnp.zeros_like(p.alpha), jnp.ones_like(p.alpha))))
PREDICTIONS.register("x0")(X0Prediction(lambda p: (jnp.ones_like(p.alpha), jnp.zeros_like(p.alpha))))
PREDICTIONS.register("v")(Prediction(_salimans_v))


def convert(point: PathPoint, output: jax.Array, x_t: jax.Array, source: str, dest: str, t_min: float) -> jax.Array:
    """An output of prediction `source` expressed in the space of prediction `dest`."""
    if source == dest:
        return output
    velocity = PREDICTIONS.get(source).to_velocity(point, output, x_t, t_min)
    return PREDICTIONS.get(dest).from_velocity(point, velocity, x_t)

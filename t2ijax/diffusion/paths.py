"""Noising paths x_t = alpha(t) x0 + sigma(t) eps on t in [0, 1], t = 1 is pure noise.

Every path is also a rectified flow in disguise: with the flow time s = sigma / (alpha + sigma)
and x_hat = x / (alpha + sigma), x_hat = (1 - s) x0 + s eps. The samplers integrate in those
coordinates, where the ODE is smooth for every path; in t it is not on VP paths, whose sigma grows
like sqrt(t) near the data.
"""
import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2ijax.registry import Registry

PATHS = Registry("diffusion.path")
BETA_SCHEDULES = Registry("diffusion.beta_schedule")

DDPM_TRAIN_STEPS = 1000


def expand(t: jax.Array, x: jax.Array) -> jax.Array:
    """Broadcasts per-example times [B] against NHWC data."""
    return jnp.reshape(t, jnp.shape(t) + (1,) * (x.ndim - jnp.ndim(t)))


class PathPoint(NamedTuple):
    """alpha, sigma and their time derivatives at some times (any shape that broadcasts with data)."""

    alpha: jax.Array
    sigma: jax.Array
    d_alpha: jax.Array
    d_sigma: jax.Array

    def interpolate(self, x0: jax.Array, eps: jax.Array) -> jax.Array:
        return self.alpha * x0 + self.sigma * eps

    def velocity(self, x0: jax.Array, eps: jax.Array) -> jax.Array:
        """d x_t / d t (eps - x0 on the rectified-flow path)."""
        return self.d_alpha * x0 + self.d_sigma * eps


@dataclasses.dataclass(frozen=True)
class Path:
    """A path given by t -> (alpha(t), sigma(t)), elementwise; derivatives come from autodiff."""

    schedule: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
    variance_preserving: bool

    def at(self, t) -> PathPoint:
        t = jnp.asarray(t, jnp.float32)
        (alpha, sigma), (d_alpha, d_sigma) = jax.jvp(self.schedule, (t,), (jnp.ones_like(t),))
        return PathPoint(alpha, sigma, d_alpha, d_sigma)

    def flow_time(self, t: jax.Array) -> jax.Array:
        """s = sigma / (alpha + sigma): the time of the rectified flow this path rescales."""
        alpha, sigma = self.schedule(jnp.asarray(t, jnp.float32))
        return sigma / (alpha + sigma)

    def time_at_flow_time(self, s: jax.Array) -> jax.Array:
        """The t with flow_time(t) = s (flow_time increases with t), by bisection to float precision."""
        s = jnp.asarray(s, jnp.float32)

        def halve(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            below = self.flow_time(mid) < s
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 40, halve, (jnp.zeros_like(s), jnp.ones_like(s)))
        return jnp.where(s <= 0, 0.0, jnp.where(s >= self.flow_time(jnp.ones_like(s)), 1.0, 0.5 * (lo + hi)))


RECTIFIED_FLOW = Path(lambda t: (1.0 - t, t), variance_preserving=False)

# Nichol & Dhariwal's cosine schedule, alpha_bar(t) = cos^2(pi/2 (t + s) / (1 + s)) / cos^2(pi/2 s / (1 + s)):
# diffusers' squaredcos_cap_v2. Written with sines so alpha(1) is exactly 0 and sigma is exact near t = 0.
_COSINE_OFFSET = 0.008
_COSINE_NORM = math.cos(0.5 * math.pi * _COSINE_OFFSET / (1 + _COSINE_OFFSET))


def _cosine_angle(t):
    return 0.5 * math.pi * t / (1 + _COSINE_OFFSET)


def _cosine_schedule(t):
    alpha = jnp.sin(_cosine_angle(1.0 - t)) / _COSINE_NORM
    sigma = jnp.sqrt(jnp.sin(_cosine_angle(t)) * jnp.sin(_cosine_angle(t + 2 * _COSINE_OFFSET))) / _COSINE_NORM
    return alpha, sigma


VP_COSINE = Path(_cosine_schedule, variance_preserving=True)


def _linear_in_index(start: float, end: float) -> Callable[[jax.Array], jax.Array]:
    return lambda u: start + (end - start) * u / (DDPM_TRAIN_STEPS - 1)


# beta_j for step index j = 0 .. 999, with the ranges DDPM and Stable Diffusion trained with.
BETA_SCHEDULES.register("linear")(_linear_in_index(1e-4, 0.02))
BETA_SCHEDULES.register("scaled_linear")(
    lambda u: jnp.square(_linear_in_index(math.sqrt(0.00085), math.sqrt(0.012))(u)))

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(4)


def log_alpha_bar(beta: Callable[[jax.Array], jax.Array], t: jax.Array) -> jax.Array:
    """log prod_{j < t T} (1 - beta_j), T = 1000, as a smooth function of t: the midpoint integral of
    f(u) = log(1 - beta(u)) over [-1/2, t T - 1/2], by 4-point Gauss-Legendre (f is nearly linear).

    At t = (i + 1) / T this is DDPM's log alphas_cumprod[i] up to the Euler-Maclaurin remainder
    (f'(t T - 1/2) - f'(-1/2)) / 24, below 6e-7 for these schedules: under float32 resolution.
    """
    f = lambda u: jnp.log1p(-beta(u))
    lo, hi = -0.5, t * DDPM_TRAIN_STEPS - 0.5
    centre, half = 0.5 * (hi + lo), 0.5 * (hi - lo)
    return half * sum(w * f(centre + half * x) for x, w in zip(_NODES, _WEIGHTS))


@functools.cache  # one Path per schedule: paths are static arguments of compiled functions
def vp_linear(beta: Callable[[jax.Array], jax.Array]) -> Path:
    def schedule(t):
        log_abar = log_alpha_bar(beta, t)
        return jnp.exp(0.5 * log_abar), jnp.sqrt(-jnp.expm1(log_abar))

    return Path(schedule, variance_preserving=True)


PATHS.register("rectified_flow")(lambda cfg: RECTIFIED_FLOW)
PATHS.register("vp_cosine")(lambda cfg: VP_COSINE)
PATHS.register("vp_linear")(lambda cfg: vp_linear(BETA_SCHEDULES.get(cfg.beta_schedule)))


def make_path(cfg: ml_collections.ConfigDict) -> Path:
    """The path named by config.diffusion (`cfg`)."""
    return PATHS.get(cfg.path)(cfg)

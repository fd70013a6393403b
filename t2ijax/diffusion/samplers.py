"""ODE samplers from noise (t = 1) to data (t = 0), with classifier-free guidance."""
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from t2ijax.diffusion.parameterization import PREDICTIONS
from t2ijax.diffusion.paths import PATHS
from t2ijax.diffusion.timesteps import shift_time
from t2ijax.registry import Registry

SAMPLERS = Registry("sampler")

# (x_t, t [B]) -> velocity
VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]


def time_grid(steps: int, shift: float) -> jax.Array:
    """steps + 1 times from 1 to 0, evenly spaced before the shift the model was trained with."""
    return shift_time(jnp.linspace(1.0, 0.0, steps + 1), shift)


def guided_velocity(apply_fn, text, text_mask, null_text, null_mask, guidance: float,
                    diffusion: ml_collections.ConfigDict) -> VelocityFn:
    """Velocity of the guided model v_u + g (v_c - v_u); one batched call for both branches.

    apply_fn(x, t, text, text_mask) is the network; null_text/null_mask [L, D]/[L] the empty caption.
    """
    path = PATHS.get(diffusion.path)
    to_velocity = PREDICTIONS.get(diffusion.prediction).to_velocity

    def conditional(x, t):
        return to_velocity(path, apply_fn(x, t, text, text_mask), x, t)

    if guidance == 1.0:
        return conditional

    batch = text.shape[0]
    both_text = jnp.concatenate([text, jnp.broadcast_to(null_text, text.shape)])
    both_mask = jnp.concatenate([text_mask, jnp.broadcast_to(null_mask, text_mask.shape)])

    def guided(x, t):
        xx, tt = jnp.concatenate([x, x]), jnp.concatenate([t, t])
        v = to_velocity(path, apply_fn(xx, tt, both_text, both_mask), xx, tt)
        v_cond, v_uncond = v[:batch], v[batch:]
        return v_uncond + guidance * (v_cond - v_uncond)

    return guided


@SAMPLERS.register("euler")
def euler(velocity_fn: VelocityFn, noise: jax.Array, times: jax.Array) -> jax.Array:
    """First-order Euler steps along `times` (decreasing from 1 to 0)."""

    def step(x, t_pair):
        t, t_next = t_pair
        v = velocity_fn(x, jnp.full((x.shape[0],), t, x.dtype))
        return x + (t_next - t) * v, None

    x, _ = jax.lax.scan(step, noise, (times[:-1], times[1:]))
    return x


def sample(velocity_fn: VelocityFn, noise: jax.Array, sampler: str, steps: int, shift: float) -> jax.Array:
    return SAMPLERS.get(sampler)(velocity_fn, noise, time_grid(steps, shift))

"""Training-time distributions over t, and the time shift shared with the samplers."""
import jax
import jax.numpy as jnp
import ml_collections

from t2ijax.registry import Registry

TIMESTEPS = Registry("diffusion.timesteps")


def shift_time(t: jax.Array, shift: float) -> jax.Array:
    """SD3/Flux time shift: shift > 1 moves mass towards noise (t = 1); 0 and 1 are fixed."""
    return shift * t / (1.0 + (shift - 1.0) * t)


@TIMESTEPS.register("uniform")
def _uniform(rng: jax.Array, n: int, cfg: ml_collections.ConfigDict) -> jax.Array:
    del cfg
    return jax.random.uniform(rng, (n,))


@TIMESTEPS.register("logit_normal")
def _logit_normal(rng: jax.Array, n: int, cfg: ml_collections.ConfigDict) -> jax.Array:
    return jax.nn.sigmoid(cfg.logit_mean + cfg.logit_std * jax.random.normal(rng, (n,)))


def sample_timesteps(rng: jax.Array, n: int, cfg: ml_collections.ConfigDict) -> jax.Array:
    """Draws n training times from `cfg.timesteps`, mixes in `cfg.uniform_fraction` uniform
    draws, then applies `cfg.shift` to all of them."""
    base_rng, uniform_rng, choice_rng = jax.random.split(rng, 3)
    t = TIMESTEPS.get(cfg.timesteps)(base_rng, n, cfg)
    use_uniform = jax.random.uniform(choice_rng, (n,)) < cfg.uniform_fraction
    t = jnp.where(use_uniform, jax.random.uniform(uniform_rng, (n,)), t)
    return shift_time(t, cfg.shift)

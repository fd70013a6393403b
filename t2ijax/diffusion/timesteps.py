"""Training-time distributions over t, and the time shift shared with the samplers."""
import math

import jax
import jax.numpy as jnp
import ml_collections

from t2ijax.registry import Registry

TIMESTEPS = Registry("diffusion.timesteps")
SHIFT_MODES = Registry("diffusion.shift_mode")


def shift_time(t: jax.Array, shift: float) -> jax.Array:
    """SD3/Flux time shift: shift > 1 moves mass towards noise (t = 1); 0 and 1 are fixed.
    On rectified flow it multiplies the noise-to-signal ratio t / (1 - t) by `shift`."""
    return shift * t / (1.0 + (shift - 1.0) * t)


SHIFT_MODES.register("fixed")(lambda cfg, num_tokens: float(cfg.shift))


@SHIFT_MODES.register("resolution")
def _resolution_shift(cfg: ml_collections.ConfigDict, num_tokens: int) -> float:
    """Flux's rule: log(shift) linear in the image token count through two (tokens, log shift) points."""
    slope = (cfg.max_log_shift - cfg.base_log_shift) / (cfg.max_tokens - cfg.base_tokens)
    return math.exp(cfg.base_log_shift + slope * (num_tokens - cfg.base_tokens))


def time_shift(cfg: ml_collections.ConfigDict, num_tokens: int) -> float:
    """The shift config.diffusion (`cfg`) gives images of `num_tokens` tokens, in training and sampling."""
    return SHIFT_MODES.get(cfg.shift_mode)(cfg, num_tokens)


@TIMESTEPS.register("uniform")
def _uniform(rng: jax.Array, n: int, cfg: ml_collections.ConfigDict) -> jax.Array:
    del cfg
    return jax.random.uniform(rng, (n,))


@TIMESTEPS.register("logit_normal")
def _logit_normal(rng: jax.Array, n: int, cfg: ml_collections.ConfigDict) -> jax.Array:
    return jax.nn.sigmoid(cfg.logit_mean + cfg.logit_std * jax.random.normal(rng, (n,)))


@TIMESTEPS.register("mode")
def _mode(rng: jax.Array, n: int, cfg: ml_collections.ConfigDict) -> jax.Array:
    """SD3's mode sampling: scale > 0 puts mass at mid times, < 0 at the ends, 0 is uniform."""
    u = jax.random.uniform(rng, (n,))
    return 1.0 - u - cfg.mode_scale * (jnp.square(jnp.cos(0.5 * jnp.pi * u)) - 1.0 + u)


@TIMESTEPS.register("cosmap")
def _cosmap(rng: jax.Array, n: int, cfg: ml_collections.ConfigDict) -> jax.Array:
    """SD3's CosMap: the rectified-flow times whose log-SNR matches the cosine schedule's under uniform u."""
    del cfg
    u = jax.random.uniform(rng, (n,))
    return 1.0 - 1.0 / (jnp.tan(0.5 * jnp.pi * u) + 1.0)


@TIMESTEPS.register("discrete")
def _discrete(rng: jax.Array, n: int, cfg: ml_collections.ConfigDict) -> jax.Array:
    """DDPM-style: t = (i + 1) / N for i uniform in 0 .. N - 1."""
    steps = cfg.discrete_steps
    return (jax.random.randint(rng, (n,), 0, steps) + 1).astype(jnp.float32) / steps


def sample_timesteps(rng: jax.Array, n: int, cfg: ml_collections.ConfigDict, shift: float) -> jax.Array:
    """Draws n training times from `cfg.timesteps` (cfg = config.diffusion), mixes in
    `cfg.uniform_fraction` uniform draws, then applies `shift` (see time_shift) to all of them."""
    base_rng, uniform_rng, choice_rng = jax.random.split(rng, 3)
    t = TIMESTEPS.get(cfg.timesteps)(base_rng, n, cfg)
    use_uniform = jax.random.uniform(choice_rng, (n,)) < cfg.uniform_fraction
    t = jnp.where(use_uniform, jax.random.uniform(uniform_rng, (n,)), t)
    return shift_time(t, shift)

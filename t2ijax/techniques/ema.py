"""Exponential moving average of the parameters, used for sampling and evaluation.

    ema <- decay * ema + (1 - decay) * params   every `every_steps` updates from `start_step`;
    ema  = params                               until then.
"""
import jax
import jax.numpy as jnp
import ml_collections


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    return cfg.decay > 0.0


def update(ema, params, step: jax.Array, cfg: ml_collections.ConfigDict):
    """EMA after the update that brought the state to `step` (updates applied so far)."""
    tracking = step <= cfg.start_step
    due = (step - cfg.start_step) % cfg.every_steps == 0
    decay = jnp.where(tracking, 0.0, jnp.where(due, cfg.decay, 1.0)).astype(jnp.float32)
    return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)

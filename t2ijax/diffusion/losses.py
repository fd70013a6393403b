"""The flow-matching objective: per-example weighted MSE in the prediction's space."""
import jax
import jax.numpy as jnp
import ml_collections

from t2ijax.diffusion.paths import PATHS
from t2ijax.diffusion.parameterization import PREDICTIONS
from t2ijax.registry import Registry

LOSS_WEIGHTINGS = Registry("diffusion.loss_weighting")
LOSS_WEIGHTINGS.register("uniform")(lambda t, cfg: jnp.ones_like(t))


def noised_inputs(x0: jax.Array, eps: jax.Array, t: jax.Array, cfg: ml_collections.ConfigDict):
    """Returns (x_t, target) for data x0, noise eps and times t under `cfg` (config.diffusion)."""
    path = PATHS.get(cfg.path)
    target = PREDICTIONS.get(cfg.prediction).target(path, x0, eps, t)
    return path.interpolate(x0, eps, t), target


def per_example_loss(output: jax.Array, target: jax.Array, t: jax.Array,
                     cfg: ml_collections.ConfigDict) -> jax.Array:
    """Mean squared error over all but the batch axis, times the loss weight at t. Float32."""
    err = jnp.square(output.astype(jnp.float32) - target.astype(jnp.float32))
    mse = jnp.mean(err, axis=tuple(range(1, err.ndim)))
    return LOSS_WEIGHTINGS.get(cfg.loss_weighting)(t, cfg) * mse

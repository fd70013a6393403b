"""The denoising objective: per-example weighted MSE in config.diffusion.loss_space.

A loss weighting is defined in one prediction space (min-SNR and EDM on x0, sigmoid on epsilon) and
moved to the loss space so that the objective stays the same: at fixed x_t an x0 error e is an error
-det / sigma * e in a space with Cramer determinant det (parameterization.py), so a weight w in space A
is w * (det_A / det_B)^2 in space B.
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from t2ijax.diffusion.parameterization import PREDICTIONS, convert
from t2ijax.diffusion.paths import PathPoint, expand, make_path
from t2ijax.registry import Registry

LOSS_WEIGHTINGS = Registry("diffusion.loss_weighting")

# Times are kept inside (0, 1): VP velocities are infinite at t = 0, x0 and epsilon determine
# nothing where sigma or alpha vanish, and the SNR-based weights are finite only inside.
T_EPS = 1e-5

Predict = Callable[[jax.Array, jax.Array], jax.Array]  # the network: (x_t, t [B]) -> output


@dataclasses.dataclass(frozen=True)
class Weighting:
    space: str | None  # the prediction space the weight is defined in; None: the loss space itself
    weight: Callable[[PathPoint, ml_collections.ConfigDict], jax.Array]


def log_snr(p: PathPoint) -> jax.Array:
    return 2.0 * (jnp.log(p.alpha) - jnp.log(p.sigma))


def _snr(p: PathPoint) -> jax.Array:
    return jnp.square(p.alpha / p.sigma)


LOSS_WEIGHTINGS.register("uniform")(Weighting(None, lambda p, cfg: jnp.ones_like(p.alpha)))
# Hang et al. 2023: min(SNR, gamma) on the x0 error.
LOSS_WEIGHTINGS.register("min_snr")(Weighting("x0", lambda p, cfg: jnp.minimum(_snr(p), cfg.min_snr_gamma)))
# Kingma & Gao 2023: sigmoid(bias - log SNR) on the epsilon error.
LOSS_WEIGHTINGS.register("sigmoid")(Weighting("epsilon", lambda p, cfg: jax.nn.sigmoid(cfg.sigmoid_bias - log_snr(p))))
# Karras et al. 2022: (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on the denoiser (x0) error, with
# EDM's sigma = sigma_t / alpha_t, i.e. SNR + 1 / sigma_data^2.
LOSS_WEIGHTINGS.register("edm")(Weighting("x0", lambda p, cfg: _snr(p) + cfg.edm_sigma_data**-2))


def loss_space(cfg: ml_collections.ConfigDict) -> str:
    """The prediction space the loss is measured in ('prediction': the network's own)."""
    return cfg.prediction if cfg.loss_space == "prediction" else cfg.loss_space


def loss_weight(point: PathPoint, cfg: ml_collections.ConfigDict) -> jax.Array:
    """config.diffusion.loss_weighting (`cfg` = config.diffusion) at `point`, expressed in the loss space."""
    weighting = LOSS_WEIGHTINGS.get(cfg.loss_weighting)
    space = loss_space(cfg)
    defined_in = PREDICTIONS.get(weighting.space or space)
    return weighting.weight(point, cfg) * jnp.square(defined_in.det(point) / PREDICTIONS.get(space).det(point))


def clip_time(t: jax.Array) -> jax.Array:
    return jnp.clip(t, T_EPS, 1.0 - T_EPS)


def noised(x0: jax.Array, eps: jax.Array, t: jax.Array, cfg: ml_collections.ConfigDict) -> tuple[PathPoint, jax.Array]:
    """(path point, x_t) at times t (already clip_time'd) under `cfg` (config.diffusion)."""
    point = make_path(cfg).at(expand(t, x0))
    return point, point.interpolate(x0, eps)


def _errors(output, x_t, point, x0, eps, cfg, space: str) -> tuple[jax.Array, jax.Array]:
    """(network output, target), both in prediction `space`."""
    output = convert(point, output.astype(jnp.float32), x_t, cfg.prediction, space, cfg.t_min)
    return output, PREDICTIONS.get(space).target(point, x0, eps)


def _per_example_mean(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def weighted_error(output: jax.Array, x_t: jax.Array, point: PathPoint, target: jax.Array,
                   cfg: ml_collections.ConfigDict) -> jax.Array:
    """Per-example weighted MSE of the network's `output` at x_t against `target`, in config.diffusion.loss_space."""
    output = convert(point, output.astype(jnp.float32), x_t, cfg.prediction, loss_space(cfg), cfg.t_min)
    return _per_example_mean(loss_weight(point, cfg) * jnp.square(output - target))


def loss_target(point: PathPoint, x0: jax.Array, eps: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """What the network's output is compared with, in config.diffusion.loss_space."""
    return PREDICTIONS.get(loss_space(cfg)).target(point, x0, eps)


def denoising_loss(output: jax.Array, x_t: jax.Array, point: PathPoint, x0: jax.Array, eps: jax.Array,
                   cfg: ml_collections.ConfigDict) -> jax.Array:
    """Per-example weighted MSE of the network's `output` at x_t in config.diffusion.loss_space."""
    return weighted_error(output, x_t, point, loss_target(point, x0, eps, cfg), cfg)


def contrastive_negatives(point: PathPoint, x0: jax.Array, eps: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """Each example's negative for contrastive flow matching: the previous example's target (the batch's
    targets rolled by one; the first example pairs with the last). The train step subtracts the weighted
    error against it (weighted_error), pushing the predictions of different examples apart."""
    return jnp.roll(loss_target(point, x0, eps, cfg), 1, axis=0)


def x0_estimate(output: jax.Array, x_t: jax.Array, point: PathPoint, cfg: ml_collections.ConfigDict) -> jax.Array:
    """The clean sample the network's output implies (exact for x0 prediction, a conversion otherwise)."""
    return convert(point, output.astype(jnp.float32), x_t, cfg.prediction, "x0", cfg.t_min)


def training_loss(predict: Predict, x0: jax.Array, eps: jax.Array, t: jax.Array,
                  cfg: ml_collections.ConfigDict) -> jax.Array:
    """Per-example weighted MSE of the network on x_t made from (x0, eps, t) under `cfg` (config.diffusion)."""
    t = clip_time(t)
    point, x_t = noised(x0, eps, t, cfg)
    return denoising_loss(predict(x_t, t), x_t, point, x0, eps, cfg)


def velocity_mse(predict: Predict, x0: jax.Array, eps: jax.Array, t: jax.Array,
                 cfg: ml_collections.ConfigDict) -> jax.Array:
    """Per-example unweighted MSE of the network's velocity: one scale for every prediction and weighting."""
    t = clip_time(t)
    point, x_t = noised(x0, eps, t, cfg)
    return _per_example_mean(jnp.square(jnp.subtract(*_errors(predict(x_t, t), x_t, point, x0, eps, cfg, "velocity"))))

"""Paths, exact conversions between predictions, and loss weights moved between spaces."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from t2ijax.config import check_diffusion
from t2ijax.diffusion.losses import LOSS_WEIGHTINGS, loss_weight, training_loss
from t2ijax.diffusion.parameterization import PREDICTIONS, convert
from t2ijax.diffusion.paths import expand, make_path
from t2ijax.errors import ConfigError

PATH_VARIANTS = {"rectified_flow": dict(path="rectified_flow"), "vp_cosine": dict(path="vp_cosine"),
                 "vp_linear": dict(path="vp_linear", beta_schedule="linear"),
                 "vp_linear_scaled": dict(path="vp_linear", beta_schedule="scaled_linear")}


def _diffusion(variant: str, **overrides):
    cfg = base.get_config().diffusion
    cfg.update(dict(PATH_VARIANTS[variant], t_min=0.0))
    cfg.update(overrides)
    return cfg


def _data(n: int = 64, low: float = 0.02, high: float = 0.98):
    x0, eps = jax.random.normal(jax.random.PRNGKey(0), (2, n, 4, 4, 3))
    return x0, eps, jnp.linspace(low, high, n)


def _noised(variant: str, **data_range):
    """(x0, eps, t, path at t, x_t) on random data."""
    x0, eps, t = _data(**data_range)
    point = make_path(_diffusion(variant)).at(expand(t, x0))
    return x0, eps, t, point, point.interpolate(x0, eps)


@pytest.mark.parametrize("variant", PATH_VARIANTS)
def test_path_derivatives_and_flow_time(variant):
    path = make_path(_diffusion(variant))
    t = jnp.linspace(0.05, 0.95, 19)
    point, h = path.at(t), 1e-3
    ahead, behind = path.at(t + h), path.at(t - h)
    np.testing.assert_allclose(point.d_alpha, (ahead.alpha - behind.alpha) / (2 * h), rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(point.d_sigma, (ahead.sigma - behind.sigma) / (2 * h), rtol=2e-3, atol=1e-3)
    assert float(path.at(0.0).alpha) == pytest.approx(1.0) and float(path.at(0.0).sigma) == pytest.approx(0.0)
    if path.variance_preserving:
        np.testing.assert_allclose(point.alpha**2 + point.sigma**2, 1.0, atol=1e-6)
    s = path.flow_time(t)
    assert bool(jnp.all(jnp.diff(s) > 0))
    np.testing.assert_allclose(path.time_at_flow_time(s), t, atol=1e-5)
    # x_t / (alpha + sigma) is the rectified flow at time s.
    x0, eps = 1.3, -0.4
    np.testing.assert_allclose(point.interpolate(x0, eps) / (point.alpha + point.sigma), (1 - s) * x0 + s * eps,
                               atol=1e-6)


def test_rectified_flow_is_the_design_convention():
    point = make_path(_diffusion("rectified_flow")).at(jnp.array([0.0, 0.3, 1.0]))
    np.testing.assert_allclose(point.alpha, [1.0, 0.7, 0.0])
    np.testing.assert_allclose(point.sigma, [0.0, 0.3, 1.0])
    np.testing.assert_allclose(point.d_alpha, -1.0)
    np.testing.assert_allclose(point.d_sigma, 1.0)


@pytest.mark.parametrize("variant", PATH_VARIANTS)
def test_every_target_converts_to_every_other_exactly(variant):
    x0, eps, _, point, x_t = _noised(variant)
    for source, dest in itertools.product(PREDICTIONS.names(), repeat=2):
        out = convert(point, PREDICTIONS.get(source).target(point, x0, eps), x_t, source, dest, 0.0)
        np.testing.assert_allclose(out, PREDICTIONS.get(dest).target(point, x0, eps), atol=2e-4, rtol=1e-4,
                                   err_msg=f"{source} -> {dest}")


@pytest.mark.parametrize("variant", PATH_VARIANTS)
def test_round_trips_x0_epsilon_velocity_v(variant):
    x0, _, _, point, x_t = _noised(variant)
    step = lambda out, source, dest: convert(point, out, x_t, source, dest, 0.0)
    back = step(step(step(x0, "x0", "epsilon"), "epsilon", "velocity"), "velocity", "x0")
    np.testing.assert_allclose(back, x0, atol=1e-4)
    back = step(step(step(x0, "x0", "v"), "v", "epsilon"), "epsilon", "x0")
    np.testing.assert_allclose(back, x0, atol=1e-4)


def test_x0_to_velocity_is_prxs_clamped_division():
    x0, _, t, point, x_t = _noised("rectified_flow", low=0.0, high=0.5)
    prx = (x_t - x0) / jnp.maximum(expand(t, x0), 0.05)
    np.testing.assert_allclose(PREDICTIONS.get("x0").to_velocity(point, x0, x_t, 0.05), prx, atol=1e-5)


def test_salimans_v_on_vp_paths():
    x0, eps, _, point, _ = _noised("vp_cosine")
    np.testing.assert_allclose(PREDICTIONS.get("v").target(point, x0, eps), point.alpha * eps - point.sigma * x0,
                               atol=1e-6)


def test_min_snr_takes_its_known_forms_in_each_space():
    cfg = _diffusion("vp_cosine", loss_weighting="min_snr", min_snr_gamma=5.0)
    t = jnp.linspace(0.05, 0.95, 10)
    point = make_path(cfg).at(t)
    snr = (point.alpha / point.sigma) ** 2
    for space, expected in [("x0", jnp.minimum(snr, 5.0)), ("epsilon", jnp.minimum(snr, 5.0) / snr),
                            ("v", jnp.minimum(snr, 5.0) / (snr + 1))]:
        cfg.loss_space = space
        np.testing.assert_allclose(loss_weight(point, cfg), expected, rtol=1e-5, err_msg=space)
    cfg.update(loss_weighting="uniform")
    np.testing.assert_allclose(loss_weight(point, cfg), 1.0)


def test_a_weighting_is_the_same_objective_in_every_loss_space():
    """weight x squared error, for an x0 error at fixed x_t, does not depend on the loss space."""
    x0, eps, t = _data(16)
    x0_error = 0.1 * eps
    for variant, weighting in itertools.product(PATH_VARIANTS, ["min_snr", "sigmoid", "edm"]):
        losses = []
        for space in PREDICTIONS.names():
            cfg = _diffusion(variant, prediction="x0", loss_space=space, loss_weighting=weighting)
            losses.append(training_loss(lambda x_t, t: x0 + x0_error, x0, eps, t, cfg))
        np.testing.assert_allclose(losses[1:], np.broadcast_to(losses[0], (3, 16)), rtol=1e-3,
                                   err_msg=f"{variant} {weighting}")


def test_every_formulation_is_finite_at_the_ends_of_time():
    """Every valid path x prediction x loss space x weighting, on a random network output at the
    extreme training times (clip_time keeps them inside (0, 1)) and in between."""
    x0, eps, _ = _data(3)
    t = jnp.array([0.0, 0.5, 1.0])
    output = jax.random.normal(jax.random.PRNGKey(3), x0.shape)
    spaces = ["prediction"] + PREDICTIONS.names()
    for variant, prediction, space, weighting in itertools.product(
            PATH_VARIANTS, PREDICTIONS.names(), spaces, LOSS_WEIGHTINGS.names()):
        cfg = _diffusion(variant, prediction=prediction, loss_space=space, loss_weighting=weighting, t_min=0.05)
        try:
            check_diffusion(cfg)
        except ConfigError:
            continue
        loss = training_loss(lambda x_t, t: output, x0, eps, t, cfg)
        assert bool(jnp.all(jnp.isfinite(loss))), (variant, prediction, space, weighting, loss)

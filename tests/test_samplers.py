"""Samplers are right, not just running: driven by the exact model of Gaussian data, every sampler x
prediction x path reproduces the data's mean and covariance, with the error falling at its order.

The exact model is affine in x, so is every sampler: running it on x1 = 0 and x1 = e_k gives the
affine map x1 -> x0 and with it the exact mean and covariance of the samples (no Monte Carlo noise).
The reference is the exact flow of N(0, I) at t = 1 to t = 0; it is the data itself except on
vp_linear, whose t = 1 still holds signal (alpha_1 > 0), so pure noise lands slightly off the data.
"""
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from t2ijax.config import check_diffusion, check_sampler
from t2ijax.diffusion.parameterization import PREDICTIONS
from t2ijax.diffusion.paths import make_path
from t2ijax.diffusion.samplers import SAMPLERS, network_evaluations, sample, sampling_grid
from t2ijax.errors import ConfigError

DIM = 3
MEAN = np.array([1.5, -1.0, 0.5])
_B = np.random.default_rng(0).normal(size=(DIM, DIM))
COV = _B @ _B.T / DIM + 0.1 * np.eye(DIM)
EIGVALS, EIGVECS = np.linalg.eigh(COV)

# The scaled-linear betas change vp_linear's numbers, not its code: tested in test_parameterization.py.
PATH_VARIANTS = {"rectified_flow": {"path": "rectified_flow"}, "vp_cosine": {"path": "vp_cosine"},
                 "vp_linear": {"path": "vp_linear", "beta_schedule": "linear"}}
# (order, step counts, error bound at the last): dpmpp_2m's steps near the two ends are long in its
# lambda = log((1 - s) / s), which costs it a log factor at moderate step counts.
EXPECTED = {"euler": (1, (16, 32), 0.1), "flow_match_euler": (1, (16, 32), 0.1), "ddim": (1, (16, 32), 0.15),
            "heun": (2, (16, 32), 2e-3), "dpmpp_2m": (2, (64, 128), 5e-4)}


def _diffusion(variant: str, prediction: str = "velocity") -> ml_collections.ConfigDict:
    cfg = base.get_config().diffusion
    cfg.update(dict(prediction=prediction, t_min=0.0, **PATH_VARIANTS[variant]))
    return cfg


def _valid(variant: str, sampler: str, prediction: str = "velocity") -> bool:
    config = base.get_config()
    config.diffusion = _diffusion(variant, prediction)
    config.sampler.name = sampler
    try:
        check_diffusion(config.diffusion)
        check_sampler(config.sampler, config.diffusion)
    except ConfigError:
        return False
    return True


def posterior_mean(point, x):
    """E[x0 | x_t] and E[eps | x_t] for x0 ~ N(MEAN, COV) at one time, in COV's eigenbasis."""
    alpha, sigma = point.alpha, point.sigma
    centred = (x - alpha * MEAN) @ EIGVECS
    var = alpha**2 * EIGVALS + sigma**2
    return MEAN + (alpha * EIGVALS / var * centred) @ EIGVECS.T, (sigma / var * centred) @ EIGVECS.T


def exact_flow_of_noise(path):
    """Mean and covariance of the exact ODE flow of N(0, I) at t = 1 to t = 0."""
    alpha, sigma = (float(c) for c in path.schedule(1.0))
    gain = EIGVECS @ np.diag(np.sqrt(EIGVALS / (alpha**2 * EIGVALS + sigma**2))) @ EIGVECS.T
    return MEAN - gain @ (alpha * MEAN), gain @ gain.T


def sampled_moments(variant: str, sampler: str, prediction: str, steps: int, shift: float = 1.0):
    """Mean and covariance of `sampler`'s samples with the exact model predicting `prediction`."""
    cfg = _diffusion(variant, prediction)
    path = make_path(cfg)
    # Samplers call the model only at their grid times: the exact model reads the path there, which
    # keeps the path's formulas out of the compiled program (much faster to compile on CPU).
    grid_t, _, grid_points = sampling_grid(sampler, path, steps, shift)

    def exact_output(x, t):
        point = jax.tree.map(lambda a: jnp.asarray(a)[jnp.argmin(jnp.abs(grid_t - t[0]))], grid_points)
        return PREDICTIONS.get(prediction).target(point, *posterior_mean(point, x))

    probes = jnp.concatenate([jnp.zeros((1, DIM)), jnp.eye(DIM)])
    y = np.asarray(jax.jit(lambda x: sample(exact_output, cfg, x, sampler, steps, shift))(probes), np.float64)
    linear = (y[1:] - y[0]).T
    return y[0], linear @ linear.T


def _error(path, mean, cov) -> float:
    ref_mean, ref_cov = exact_flow_of_noise(path)
    return float(np.abs(mean - ref_mean).max() + np.abs(cov - ref_cov).max())


CASES = [(v, s) for v, s in itertools.product(PATH_VARIANTS, SAMPLERS.names()) if _valid(v, s)]


@pytest.mark.parametrize("variant,sampler", CASES)
def test_exact_model_samples_match_the_data_at_the_expected_order(variant, sampler):
    order, steps, tolerance = EXPECTED[sampler]
    path = make_path(_diffusion(variant))
    predictions = [p for p in PREDICTIONS.names() if _valid(variant, sampler, p)]
    for name in predictions:
        errs = [_error(path, *sampled_moments(variant, sampler, name, n)) for n in steps]
        assert errs[-1] < tolerance, (name, errs)
        ratios = [a / b for a, b in zip(errs, errs[1:])]
        low = 1.6 if order == 1 else 2.5
        assert all(low < r < 2 ** order * 1.3 for r in ratios), (name, errs)


def test_vp_linear_reference_is_the_data_up_to_its_terminal_signal():
    mean, cov = exact_flow_of_noise(make_path(_diffusion("vp_linear")))
    assert 1e-3 < np.abs(mean - MEAN).max() < 1e-2 and np.abs(cov - COV).max() < 1e-2
    mean, cov = exact_flow_of_noise(make_path(_diffusion("rectified_flow")))
    np.testing.assert_allclose(mean, MEAN, atol=1e-12)
    np.testing.assert_allclose(cov, COV, atol=1e-12)


def test_shifted_grids_converge_at_the_same_order():
    """Shift 3 spends fewer steps near the data: larger errors, the same order."""
    for variant, sampler in [("rectified_flow", "heun"), ("vp_cosine", "dpmpp_2m")]:
        path = make_path(_diffusion(variant))
        coarse, fine = (_error(path, *sampled_moments(variant, sampler, "velocity", n, shift=3.0)) for n in (64, 128))
        assert fine < 5e-3 and 2.5 < coarse / fine < 4 * 1.3, (sampler, coarse, fine)


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_network_evaluations_count_the_calls_a_sampler_makes(sampler):
    calls = []

    def counted_output(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.zeros_like(x)

    variant = "vp_cosine" if SAMPLERS.get(sampler).vp_only else "rectified_flow"
    jax.block_until_ready(jax.jit(lambda x: sample(counted_output, _diffusion(variant), x, sampler, 5, 1.0))(
        jnp.ones((1, DIM))))
    assert len(calls) == network_evaluations(sampler, 5, guidance=1.0) == network_evaluations(sampler, 5, 4.0) // 2

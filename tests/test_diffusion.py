"""The training objective, training time distributions, the time shift and guidance."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from configs import base
from t2ijax.diffusion.losses import T_EPS, training_loss, velocity_mse
from t2ijax.diffusion.samplers import guided_output
from t2ijax.diffusion.timesteps import sample_timesteps, shift_time, time_shift

N = 200_000


def _diffusion(**overrides):
    cfg = base.get_config().diffusion
    cfg.update(overrides)
    return cfg


def test_rectified_flow_objective_is_the_velocity_mse():
    cfg = _diffusion()
    x0, eps = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 4, 3))
    t = jnp.array([0.0, 0.25, 0.75, 1.0])
    seen = {}

    def predict(x_t, t):
        seen.update(x_t=x_t, t=t)
        return eps - x0 + 1.0

    np.testing.assert_allclose(training_loss(predict, x0, eps, t, cfg), np.ones(4), atol=1e-6)
    clipped = np.clip(t, T_EPS, 1 - T_EPS)[:, None, None, None]
    np.testing.assert_allclose(seen["t"], clipped[:, 0, 0, 0])
    np.testing.assert_allclose(seen["x_t"], (1 - clipped) * x0 + clipped * eps, atol=1e-6)
    np.testing.assert_allclose(velocity_mse(predict, x0, eps, t, cfg), np.ones(4), atol=1e-6)


def test_heldout_velocity_mse_ignores_the_weighting_and_loss_space():
    x0, eps = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 4, 4, 3))
    t = jnp.array([0.2, 0.5, 0.9])
    predict = lambda x_t, t: x0 + 0.1  # an x0 prediction, off by 0.1 everywhere
    cfg = _diffusion(prediction="x0", t_min=0.0)
    velocity_error = (0.1 / t) ** 2  # (x_t - x0_hat) / t - (eps - x0)
    np.testing.assert_allclose(velocity_mse(predict, x0, eps, t, cfg), velocity_error, rtol=1e-4)
    cfg.update(loss_space="velocity", loss_weighting="min_snr")
    np.testing.assert_allclose(velocity_mse(predict, x0, eps, t, cfg), velocity_error, rtol=1e-4)
    np.testing.assert_allclose(training_loss(predict, x0, eps, t, _diffusion(prediction="x0")), 0.01, rtol=1e-4)


def test_shift_fixes_endpoints_and_moves_mass_to_noise():
    t = jnp.linspace(0, 1, 11)
    np.testing.assert_allclose(shift_time(t, 1.0), t, atol=1e-7)
    shifted = shift_time(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert bool(jnp.all(jnp.diff(shifted) > 0)) and bool(jnp.all(shifted[1:-1] > t[1:-1]))


def test_resolution_shift_is_fluxs():
    cfg = _diffusion(shift_mode="resolution")
    for tokens in (64, 256, 1024, 4096):
        assert time_shift(cfg, tokens) == pytest.approx(math.exp(calculate_shift(tokens)), rel=1e-9)
    assert time_shift(_diffusion(shift=3.0), 4096) == 3.0


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_logit_normal_with_uniform_fraction(shift):
    cfg = _diffusion()
    t = np.asarray(sample_timesteps(jax.random.PRNGKey(0), N, cfg, shift))
    assert t.min() >= 0 and t.max() <= 1
    unshifted = t / (shift - (shift - 1) * t)  # the inverse of shift_time
    logit_normal_cdf_at_quarter = scipy.stats.norm.cdf(np.log(0.25 / 0.75))  # P(sigmoid(N(0,1)) < 0.25)
    expected = 0.9 * logit_normal_cdf_at_quarter + 0.1 * 0.25
    assert abs(np.mean(unshifted < 0.25) - expected) < 0.005
    if shift > 1:
        assert np.median(t) > 0.6


def _draws(**overrides) -> np.ndarray:
    return np.asarray(sample_timesteps(jax.random.PRNGKey(2), N, _diffusion(uniform_fraction=0.0, **overrides), 1.0))


@pytest.mark.parametrize("u", [0.1, 0.3, 0.5, 0.8])
def test_mode_and_cosmap_are_sd3s_maps_of_a_uniform(u):
    # Both maps decrease in u (mode) or increase (cosmap): their CDFs at f(u) are 1 - u and u.
    mode = 1 - u - 1.29 * (math.cos(math.pi * u / 2) ** 2 - 1 + u)
    assert abs(np.mean(_draws(timesteps="mode") < mode) - (1 - u)) < 0.005
    cosmap = 1 - 1 / (math.tan(math.pi * u / 2) + 1)
    assert abs(np.mean(_draws(timesteps="cosmap") < cosmap) - u) < 0.005


def test_mode_sampling_favours_the_middle_and_uniform_mode_is_uniform():
    assert np.mean(np.abs(_draws(timesteps="mode") - 0.5) < 0.25) > 0.6
    assert abs(np.mean(_draws(timesteps="mode", mode_scale=0.0) < 0.3) - 0.3) < 0.005


def test_discrete_timesteps_are_ddpm_steps():
    t = _draws(timesteps="discrete", discrete_steps=10)
    np.testing.assert_allclose(np.unique(t), np.arange(1, 11) / 10, atol=1e-7)
    assert abs(np.mean(t == 1.0) - 0.1) < 0.005


def _toy_network(x, t, txt, m):  # "output" = x + mean text feature
    return x + jnp.mean(txt, axis=(1, 2))[:, None]


def test_classifier_free_guidance_uses_the_negative_prompt():
    text, mask = jnp.ones((2, 3, 4)), jnp.ones((2, 3), bool)
    negative, negative_mask = jnp.full((3, 4), -1.0), jnp.ones((3,), bool)
    x, t = jnp.full((2, 5), 0.5), jnp.full((2,), 0.3)
    np.testing.assert_allclose(guided_output(_toy_network, text, mask, negative, negative_mask, 1.0, (0, 1))(x, t),
                               x + 1)
    # -1 + 4 (1 - (-1))
    np.testing.assert_allclose(guided_output(_toy_network, text, mask, negative, negative_mask, 4.0, (0, 1))(x, t),
                               x + 7)


def test_guidance_interval_guides_only_inside():
    text, mask = jnp.ones((3, 3, 4)), jnp.ones((3, 3), bool)
    null, null_mask = jnp.zeros((3, 4)), jnp.zeros((3,), bool)
    x, t = jnp.zeros((3, 2)), jnp.array([0.1, 0.5, 0.95])
    out = guided_output(_toy_network, text, mask, null, null_mask, 3.0, (0.2, 0.9))(x, t)
    np.testing.assert_allclose(out[:, 0], [1.0, 3.0, 1.0])

"""The rectified-flow objective, training time distribution and Euler sampler."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from configs import base
from t2ijax.diffusion.losses import noised_inputs, per_example_loss
from t2ijax.diffusion.samplers import guided_velocity, sample, time_grid
from t2ijax.diffusion.timesteps import sample_timesteps, shift_time


def test_rectified_flow_inputs_and_velocity_target():
    cfg = base.get_config().diffusion
    x0, eps = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 4, 3))
    t = jnp.array([0.0, 0.25, 0.75, 1.0])
    x_t, target = noised_inputs(x0, eps, t, cfg)
    np.testing.assert_allclose(x_t, (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps, atol=1e-6)
    np.testing.assert_allclose(x_t[0], x0[0], atol=1e-6)
    np.testing.assert_allclose(x_t[-1], eps[-1], atol=1e-6)
    np.testing.assert_allclose(target, eps - x0, atol=1e-6)
    loss = per_example_loss(target + 1.0, target, t, cfg)
    np.testing.assert_allclose(loss, np.ones(4), atol=1e-6)


def test_shift_fixes_endpoints_and_moves_mass_to_noise():
    t = jnp.linspace(0, 1, 11)
    np.testing.assert_allclose(shift_time(t, 1.0), t, atol=1e-7)
    shifted = shift_time(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert bool(jnp.all(jnp.diff(shifted) > 0)) and bool(jnp.all(shifted[1:-1] > t[1:-1]))


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_logit_normal_with_uniform_fraction(shift):
    cfg = base.get_config().diffusion
    cfg.shift = shift
    t = np.asarray(sample_timesteps(jax.random.PRNGKey(0), 200_000, cfg))
    assert t.min() >= 0 and t.max() <= 1
    unshifted = t if shift == 1.0 else t / (shift - (shift - 1) * t)  # the inverse of shift_time
    logit_normal_cdf_at_quarter = scipy.stats.norm.cdf(np.log(0.25 / 0.75))  # P(sigmoid(N(0,1)) < 0.25)
    expected = 0.9 * logit_normal_cdf_at_quarter + 0.1 * 0.25
    assert abs(np.mean(unshifted < 0.25) - expected) < 0.005
    if shift > 1:
        assert np.median(t) > 0.6


def _gaussian_velocity(mu, s):
    """The exact velocity E[eps - x0 | x_t] for data N(mu, s^2) on the rectified-flow path."""

    def velocity(x, t):
        t = t[:, None]
        var = (1 - t) ** 2 * s**2 + t**2
        centred = x - (1 - t) * mu
        x0_hat = mu + (1 - t) * s**2 / var * centred
        eps_hat = t / var * centred
        return eps_hat - x0_hat

    return velocity


def test_euler_with_the_exact_model_recovers_the_data_and_converges_first_order():
    mu, s = jnp.array([2.0, -1.0]), jnp.array([0.5, 1.5])
    noise = jax.random.normal(jax.random.PRNGKey(1), (100_000, 2))
    errors = []
    for steps in (8, 16, 32):
        x = sample(_gaussian_velocity(mu, s), noise, "euler", steps, shift=1.0)
        errors.append(float(jnp.max(jnp.abs(jnp.std(x, 0) - s)) + jnp.max(jnp.abs(jnp.mean(x, 0) - mu))))
    x = sample(_gaussian_velocity(mu, s), noise, "euler", 200, shift=3.0)
    np.testing.assert_allclose(jnp.mean(x, 0), mu, atol=0.02)
    np.testing.assert_allclose(jnp.std(x, 0), s, atol=0.02)
    # First order: doubling the steps roughly halves the error.
    assert 1.5 < errors[0] / errors[1] < 2.6 and 1.5 < errors[1] / errors[2] < 2.6, errors


def test_time_grid_runs_from_noise_to_data():
    grid = time_grid(4, 3.0)
    assert grid[0] == 1 and grid[-1] == 0 and grid.shape == (5,)


def test_classifier_free_guidance_combines_both_branches():
    cfg = base.get_config().diffusion
    text = jnp.ones((2, 3, 4))
    mask = jnp.ones((2, 3), bool)
    null_text, null_mask = jnp.zeros((3, 4)), jnp.zeros((3,), bool)

    def apply_fn(x, t, txt, m):  # "velocity" = x + mean text feature
        return x + jnp.mean(txt, axis=(1, 2))[:, None]

    x, t = jnp.full((2, 5), 0.5), jnp.full((2,), 0.3)
    np.testing.assert_allclose(guided_velocity(apply_fn, text, mask, null_text, null_mask, 1.0, cfg)(x, t), x + 1)
    np.testing.assert_allclose(guided_velocity(apply_fn, text, mask, null_text, null_mask, 4.0, cfg)(x, t), x + 4)

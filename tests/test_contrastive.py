"""Contrastive flow matching's negatives: each example's is the previous example's target, in the
loss space, and the error against it is the denoising error's weighting and space applied to it."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import shapes_tiny
from t2ijax.diffusion.losses import contrastive_negatives, denoising_loss, noised, weighted_error


def _cfg(**fields) -> ml_collections.ConfigDict:
    cfg = shapes_tiny.get_config().diffusion
    cfg.update(fields)
    return cfg


def _example(cfg):
    rng = np.random.default_rng(0)
    x0, eps = (jnp.asarray(rng.normal(size=(4, 2, 2, 3)), jnp.float32) for _ in range(2))
    t = jnp.asarray([0.2, 0.4, 0.6, 0.8])
    point, x_t = noised(x0, eps, t, cfg)
    return x0, eps, point, x_t


def test_each_negative_is_the_previous_examples_velocity():
    cfg = _cfg(path="rectified_flow", prediction="velocity", loss_space="prediction")
    x0, eps, point, _ = _example(cfg)
    negatives = np.asarray(contrastive_negatives(point, x0, eps, cfg))
    velocity = np.asarray(eps - x0)  # rectified flow: d x_t / dt
    for i in range(4):
        np.testing.assert_allclose(negatives[i], velocity[i - 1], rtol=1e-6)  # example 0 pairs with the last


def test_the_error_against_the_negatives_is_zero_for_them_and_the_squared_gap_for_the_targets():
    cfg = _cfg(path="rectified_flow", prediction="velocity", loss_space="prediction", loss_weighting="uniform")
    x0, eps, point, x_t = _example(cfg)
    negatives = contrastive_negatives(point, x0, eps, cfg)
    np.testing.assert_allclose(weighted_error(negatives, x_t, point, negatives, cfg), 0.0, atol=1e-7)
    velocity = np.asarray(eps - x0)
    expected = np.mean((velocity - np.roll(velocity, 1, axis=0)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(weighted_error(eps - x0, x_t, point, negatives, cfg), expected, rtol=1e-5)


@pytest.mark.parametrize("loss_space, loss_weighting", [("x0", "min_snr"), ("epsilon", "sigmoid"),
                                                         ("velocity", "edm")])
def test_the_error_against_the_negatives_is_the_denoising_loss_on_the_rolled_examples(loss_space, loss_weighting):
    """On rectified flow the x0, epsilon and velocity targets do not depend on t: the negative of example i
    is then the target of example i's own point made from example i - 1's (x0, eps), whatever the
    prediction, loss space and weighting."""
    cfg = _cfg(path="rectified_flow", prediction="x0", loss_space=loss_space, loss_weighting=loss_weighting)
    x0, eps, point, x_t = _example(cfg)
    output = jnp.asarray(np.random.default_rng(1).normal(size=x0.shape), jnp.float32)
    rolled = denoising_loss(output, x_t, point, jnp.roll(x0, 1, axis=0), jnp.roll(eps, 1, axis=0), cfg)
    got = weighted_error(output, x_t, point, contrastive_negatives(point, x0, eps, cfg), cfg)
    np.testing.assert_allclose(got, rolled, rtol=1e-5)
    assert not np.allclose(got, denoising_loss(output, x_t, point, x0, eps, cfg), rtol=1e-3)


def test_the_error_against_the_negatives_carries_the_loss_weight():
    """min-SNR on x0 (rectified flow: SNR = ((1 - t) / t)^2), written out by hand."""
    cfg = _cfg(path="rectified_flow", prediction="x0", loss_space="x0", loss_weighting="min_snr", min_snr_gamma=5.0)
    x0, eps, point, x_t = _example(cfg)
    output = np.random.default_rng(1).normal(size=x0.shape).astype(np.float32)
    t = np.array([0.2, 0.4, 0.6, 0.8])
    weight = np.minimum(((1 - t) / t) ** 2, 5.0)
    expected = weight * np.mean((output - np.roll(np.asarray(x0), 1, axis=0)) ** 2, axis=(1, 2, 3))
    got = weighted_error(jnp.asarray(output), x_t, point, contrastive_negatives(point, x0, eps, cfg), cfg)
    np.testing.assert_allclose(got, expected, rtol=1e-5)

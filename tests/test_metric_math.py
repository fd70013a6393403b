"""Fréchet distance and CMMD against direct float64 evaluations of their published formulas."""
import numpy as np
import pytest
import scipy.linalg

from t2ijax.errors import ConfigError
from t2ijax.metrics.frechet import Moments, frechet_distance, frechet_distance_of
from t2ijax.metrics.mmd import l2_normalize, mmd


def _gaussian_features(rng, n, dim, shift=0.0):
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return (rng.normal(size=(n, dim)) @ mixing + shift).astype(np.float32)


def _scipy_frechet(mean1, cov1, mean2, cov2):
    """The formula as pytorch-fid evaluates it: a general matrix square root of C1 C2."""
    covmean = scipy.linalg.sqrtm(cov1 @ cov2).real
    diff = mean1 - mean2
    return diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean)


@pytest.mark.parametrize("dim", [16, 128])
def test_frechet_distance_matches_scipy(dim):
    rng = np.random.default_rng(dim)
    a = _gaussian_features(rng, 2000, dim).astype(np.float64)
    b = _gaussian_features(rng, 1500, dim, shift=0.3).astype(np.float64)
    stats = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    expected = _scipy_frechet(*stats)
    assert expected > 1.0
    assert abs(frechet_distance(*stats) - expected) <= 1e-6 * expected
    assert abs(frechet_distance(*stats[:2], *stats[:2])) <= 1e-9 * np.trace(stats[1])


def test_streamed_moments_equal_one_shot():
    rng = np.random.default_rng(0)
    features = _gaussian_features(rng, 1000, 48, shift=5.0)  # an offset mean stresses naive sums
    streamed = Moments()
    for start, stop in [(0, 7), (7, 300), (300, 301), (301, 621), (621, 941), (941, 1000)]:
        batch = np.zeros((320, 48), np.float32)  # fixed padded shape, as the extractor feeds it
        batch[:stop - start] = features[start:stop]
        streamed.update(batch, np.arange(320) < stop - start)
    one_shot = Moments()
    one_shot.update(features)
    expected_mean = features.astype(np.float64).mean(0)
    expected_cov = np.cov(features.astype(np.float64), rowvar=False)
    for moments in (streamed, one_shot):
        assert moments.count == 1000
        np.testing.assert_allclose(moments.mean, expected_mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(moments.covariance(), expected_cov, rtol=1e-5, atol=1e-6)
    other = Moments()
    other.update(_gaussian_features(rng, 800, 48, shift=5.2))
    assert frechet_distance_of(streamed, other) == pytest.approx(frechet_distance_of(one_shot, other), rel=1e-6)
    restored = Moments.from_state(streamed.state())
    np.testing.assert_array_equal(restored.covariance(), streamed.covariance())


def test_covariance_of_one_sample_is_a_clear_error():
    moments = Moments()
    moments.update(np.ones((1, 4), np.float32))
    with pytest.raises(ConfigError, match="at least 2 samples, got 1") as error:
        moments.covariance()
    assert "\n" not in str(error.value)


def _numpy_cmmd(x, y, unbiased):
    """CMMD written out: RBF kernel sigma 10 on every pair, x1000."""
    def kernel(a, b):
        return np.exp(-np.sum((a[:, None] - b[None]) ** 2, -1) / (2 * 10.0**2))

    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    if unbiased:
        m, n = len(x), len(y)
        within = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    else:
        within = k_xx.mean() + k_yy.mean()
    return 1000.0 * (within - 2.0 * k_xy.mean())


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_matches_the_formula(unbiased):
    rng = np.random.default_rng(1)
    x = np.asarray(l2_normalize(_gaussian_features(rng, 300, 32)))
    y = np.asarray(l2_normalize(_gaussian_features(rng, 170, 32, shift=0.2)))
    expected = _numpy_cmmd(x.astype(np.float64), y.astype(np.float64), unbiased)
    got = mmd(x, y, unbiased=unbiased, block_size=64)  # several blocks, the last one partial
    assert abs(got - expected) <= 1e-5 * abs(expected), (got, expected)
    if not unbiased:
        assert abs(mmd(x, x)) <= 1e-5 * expected

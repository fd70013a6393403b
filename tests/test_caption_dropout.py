"""drop_captions (config.data.caption_dropout): each example keeps its caption or takes the empty
caption's embeddings and mask, whole, with probability `rate`, drawn afresh for each key."""
import jax
import numpy as np
import pytest

from t2ijax.training.step import drop_captions

LENGTH, WIDTH = 4, 3


def _captions(n: int):
    rng = np.random.default_rng(0)
    text = rng.normal(size=(n, LENGTH, WIDTH)).astype(np.float32)
    mask = np.arange(LENGTH)[None, :] < rng.integers(1, LENGTH, (n, 1))  # never all valid, as null_mask is
    return text, mask, np.full((LENGTH, WIDTH), 7.0, np.float32), np.ones((LENGTH,), bool)


def _dropped(rate: float, n: int, seed: int = 0) -> np.ndarray:
    """Which of n examples took the empty caption, checking each took it whole or kept its own whole."""
    text, mask, null_text, null_mask = _captions(n)
    got_text, got_mask = map(np.asarray, drop_captions(jax.random.PRNGKey(seed), text, mask, null_text, null_mask,
                                                       rate))
    dropped = np.all(got_text == null_text, axis=(1, 2))
    kept = np.all(got_text == text, axis=(1, 2))
    assert np.all(dropped ^ kept)
    np.testing.assert_array_equal(got_mask[dropped], np.broadcast_to(null_mask, (dropped.sum(), LENGTH)))
    np.testing.assert_array_equal(got_mask[kept], mask[kept])
    return dropped


@pytest.mark.parametrize("rate, expected", [(0.0, False), (1.0, True)])
def test_rate_0_keeps_every_caption_and_rate_1_drops_every_one(rate, expected):
    assert np.all(_dropped(rate, 64) == expected)


def test_each_example_is_dropped_whole_with_probability_rate():
    n = 4000
    dropped = _dropped(0.3, n)
    assert abs(dropped.mean() - 0.3) < 0.03  # 4 standard deviations of the binomial
    assert np.any(_dropped(0.3, n, seed=1) != dropped)  # each step's key draws its own examples

"""REPA's alignment term on known features, iREPA's target normalisation against its definition, and
the switch-off schedule."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch

from t2ijax.techniques import repa


def _teacher(b=2, grid=(2, 3), d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(b, *grid, d)).astype(np.float32)


def test_alignment_is_the_mean_cosine_at_the_captured_tokens():
    teacher = _teacher()
    flat = teacher.reshape(2, 6, 5)
    tokens = np.array([[0, 2, 5], [1, 3, 4]])
    same = np.stack([flat[b, tokens[b]] for b in range(2)])
    np.testing.assert_allclose(repa.alignment(3.0 * same, tokens, teacher, normalize=False), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(repa.alignment(-same, tokens, teacher, normalize=False), [-1.0, -1.0], rtol=1e-6)
    projected = np.random.default_rng(1).normal(size=(2, 3, 5)).astype(np.float32)
    expected = [np.mean([np.dot(p, t) / np.linalg.norm(p) / np.linalg.norm(t) for p, t in zip(projected[b], same[b])])
                for b in range(2)]
    np.testing.assert_allclose(repa.alignment(projected, tokens, teacher, normalize=False), expected, rtol=1e-5)


def test_spatial_norm_matches_irepa_in_torch():
    features = _teacher(grid=(3, 3), d=4).reshape(2, 9, 4)
    t = torch.from_numpy(features)
    gamma = t.mean(dim=2, keepdim=True)
    t = t - gamma * t.mean(dim=1, keepdim=True)
    expected = t / (t.std(dim=1, keepdim=True) + 1e-6)
    np.testing.assert_allclose(repa.spatial_norm(jnp.asarray(features)), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_weight_switches_off_at_stop_step():
    cfg = ml_collections.ConfigDict({"weight": 0.5, "stop_step": 100})
    assert float(repa.weight_at(cfg, jnp.asarray(99))) == 0.5 and float(repa.weight_at(cfg, jnp.asarray(100))) == 0.0
    cfg.stop_step = 0
    assert float(repa.weight_at(cfg, jnp.asarray(10**6))) == 0.5

"""Resampling equals torch's interpolate, up and down, with and without antialiasing."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2ijax.models.vision.resize import resize


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("in_size, out_size", [((32, 32), (299, 299)), ((37, 29), (16, 11)), ((9, 9), (9, 5))])
def test_resize_matches_torch(method, antialias, in_size, out_size):
    images = np.random.default_rng(0).uniform(size=(2, *in_size, 3)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2), size=out_size, mode=method,
                             align_corners=False, antialias=antialias).permute(0, 2, 3, 1).numpy()
    got = np.asarray(resize(images, out_size, method, antialias))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-6)

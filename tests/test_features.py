"""Feature extraction and its streamed statistics: sharded over 8 devices equals 1 device."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from configs import base
from conftest import env_with_devices
from t2ijax import sharding
from t2ijax.errors import ConfigError
from t2ijax.metrics.features import clip_extractor, load_extractor
from t2ijax.metrics.frechet import Moments

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARDED = textwrap.dedent("""
    import sys, jax, ml_collections, numpy as np
    from t2ijax import sharding
    from t2ijax.metrics.features import clip_extractor
    from t2ijax.metrics.frechet import Moments
    assert jax.device_count() == 8
    images = np.load(sys.argv[2])
    mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 4, "fsdp": 2, "tensor": 1}))
    extractor, moments, features = clip_extractor(sys.argv[1]), Moments(), []
    for batch, valid in extractor.batches(images, batch_size=8, mesh=mesh):
        assert len(batch.sharding.device_set) == 8
        moments.update(batch, valid)
        features.append(np.asarray(batch)[valid])
    np.savez(sys.argv[3], features=np.concatenate(features), mean=moments.mean, cov=moments.covariance())
""")



def test_features_on_8_devices_match_1_device(tiny_clip_dir, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(21, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    env = env_with_devices(8)
    subprocess.run([sys.executable, "-c", SHARDED, str(tiny_clip_dir), str(tmp_path / "images.npy"),
                    str(tmp_path / "sharded.npz")], cwd=REPO, env=env, check=True, timeout=120)
    sharded = np.load(tmp_path / "sharded.npz")

    extractor = clip_extractor(tiny_clip_dir)
    single = extractor(images, batch_size=5)
    moments = Moments()
    for batch, valid in extractor.batches(images, batch_size=8, mesh=sharding.make_mesh(base.get_config().mesh)):
        moments.update(batch, valid)
    assert single.shape == (21, 16)
    np.testing.assert_allclose(sharded["features"], single, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sharded["mean"], moments.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sharded["cov"], moments.covariance(), rtol=1e-5, atol=1e-6)


def test_extractor_without_weights_says_which_field_to_set():
    with pytest.raises(ConfigError, match=r"set config\.eval\.clip_weights") as error:
        load_extractor("clip", base.get_config().eval)
    assert "\n" not in str(error.value)

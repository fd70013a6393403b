"""The parameter EMA against a direct numpy recurrence."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from t2ijax.techniques import ema


@pytest.mark.parametrize("decay, every_steps, start_step", [(0.9, 1, 0), (0.99, 10, 0), (0.8, 3, 5)])
def test_ema_follows_the_recurrence(decay, every_steps, start_step):
    cfg = ml_collections.ConfigDict(dict(decay=decay, every_steps=every_steps, start_step=start_step))
    rng = np.random.default_rng(0)
    params_by_step = rng.standard_normal((30, 4)).astype(np.float32)
    expected = params_by_step[0].astype(np.float64)
    state = {"w": jnp.asarray(params_by_step[0])}
    for step in range(1, 30):
        params = params_by_step[step]
        if step <= start_step:
            expected = params.astype(np.float64)
        elif (step - start_step) % every_steps == 0:
            expected = decay * expected + (1 - decay) * params
        state = ema.update(state, {"w": jnp.asarray(params)}, jnp.int32(step), cfg)
        np.testing.assert_allclose(np.asarray(state["w"]), expected, rtol=1e-5, atol=1e-6)

"""NaN/Inf in the step: 'skip' leaves the state as it was and counts it, 'halt' stops before any
checkpoint after the bad step; with finite values both policies take the same step bit for bit."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from t2ijax.errors import NonFiniteError
from t2ijax.training.checkpoint import Checkpointer
from t2ijax.training.loop import Run

BAD_STEP = 3


def _run(data_dir, workdir, policy):
    config = tiny_config(data_dir)
    config.update_from_flattened_dict({"nonfinite.policy": policy, "total_steps": 5, "checkpoint.every_steps": 1,
                                       "checkpoint.keep": 10, "ema.decay": 0.5, "eval.metrics": ()})
    run = Run(config, str(workdir)).setup()
    clean_batch = run.device_batch

    def batch_with_nan(step):  # NaN pixels at BAD_STEP: a NaN loss and NaN gradients
        batch = clean_batch(step)
        return dict(batch, x0=batch["x0"] * jnp.nan) if step == BAD_STEP else batch

    run.device_batch = batch_with_nan
    return run


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    return {policy: _run(data_dir, tmp_path_factory.mktemp(policy), policy) for policy in ("skip", "halt")}


def _copy(state):
    return jax.tree.map(jnp.copy, state)  # the step donates its input


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_both_policies_take_the_same_step_on_finite_values(runs):
    skip, halt = runs["skip"], runs["halt"]
    state = _copy(halt.state)
    for step in range(2):
        batch = halt.device_batch(step)
        skipped, skip_metrics = skip.train_step(_copy(state), batch)
        state, metrics = halt.train_step(state, batch)
        assert not skip_metrics["nonfinite"] and not metrics["nonfinite"]
        for a, b in zip(_leaves(skipped), _leaves(state)):  # to float rounding: skip's program fuses differently
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_skip_keeps_the_state_and_counts_the_step(runs):
    run = runs["skip"]
    run.train()
    checkpoints = Checkpointer(run.checkpointer.directory, read_only=True)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), run.state)
    before, after = (checkpoints.restore(abstract, step) for step in (BAD_STEP, BAD_STEP + 1))
    assert int(after.step) == BAD_STEP + 1
    for name in ("params", "opt_state", "ema_params"):
        for a, b in zip(_leaves(getattr(before, name)), _leaves(getattr(after, name))):
            np.testing.assert_array_equal(a, b, err_msg=name)
    final = checkpoints.restore(abstract)
    assert all(np.isfinite(x).all() for x in _leaves(final.params))
    assert not np.array_equal(_leaves(final.params)[0], _leaves(after.params)[0])  # training went on
    _, counters = Checkpointer(run.checkpointer.directory).resume(abstract)
    assert counters["skipped_steps"] == 1


def test_halt_names_step_metric_and_last_checkpoint_and_writes_nothing_after(runs):
    run = runs["halt"]
    # The batch of state step 3 feeds the 4th update: "step 4" in the log lines.
    with pytest.raises(NonFiniteError, match=rf"loss was nan at step {BAD_STEP + 1}; the last checkpoint is step "
                                             rf"{BAD_STEP} and none was written after it"):
        run.train()
    checkpoints = Checkpointer(run.checkpointer.directory, read_only=True)
    assert checkpoints.steps() == list(range(1, BAD_STEP + 1))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), run.state)
    for step in checkpoints.steps():
        assert all(np.isfinite(x).all() for x in _leaves(checkpoints.restore(abstract, step)))
    assert not os.path.exists(os.path.join(run.workdir, "eval.json"))


def _nan_update_at(count: int) -> optax.GradientTransformation:
    """Fault injection: a finite loss and gradient whose update is NaN, at the optimizer's `count`-th update
    (the count is part of the optimizer state, so a skipped update comes back on the next step)."""
    return optax.GradientTransformation(
        lambda params: jnp.zeros((), jnp.int32),
        lambda updates, n, params=None: (jax.tree.map(lambda u: u + jnp.where(n == count, jnp.nan, 0.0), updates),
                                         n + 1))


@pytest.mark.parametrize("policy", ["skip", "halt"])
def test_a_finite_gradient_with_a_non_finite_update_is_never_checkpointed(data_dir, tmp_path, monkeypatch, policy):
    import t2ijax.training.loop

    real = t2ijax.training.loop.run_optimizer
    monkeypatch.setattr(t2ijax.training.loop, "run_optimizer",
                        lambda config: (optax.chain(real(config)[0], _nan_update_at(BAD_STEP)), real(config)[1]))
    config = tiny_config(data_dir)
    config.update_from_flattened_dict({"nonfinite.policy": policy, "total_steps": 5, "checkpoint.every_steps": 1,
                                       "checkpoint.keep": 10, "ema.decay": 0.5, "eval.metrics": ()})
    run = Run(config, str(tmp_path)).setup()
    if policy == "halt":
        with pytest.raises(NonFiniteError, match=rf"the updated params, optimizer state or EMA held a NaN/Inf \(loss "
                                                 rf"and gradient norm were finite\) at step {BAD_STEP + 1}; the last "
                                                 rf"checkpoint is step {BAD_STEP}"):
            run.train()
    else:
        run.train()
        assert run.counters["skipped_steps"] == config.total_steps - BAD_STEP  # the same update every time
    checkpoints = Checkpointer(run.checkpointer.directory, read_only=True)
    assert checkpoints.steps() == list(range(1, (BAD_STEP if policy == "halt" else config.total_steps) + 1))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), run.state)
    for step in checkpoints.steps():
        assert all(np.isfinite(x).all() for x in _leaves(checkpoints.restore(abstract, step))), step


def test_an_optimizer_that_cannot_stay_finite_is_refused():
    from configs import base
    from t2ijax.config import validate
    from t2ijax.errors import ConfigError

    config = base.get_config()
    config.optim.eps = 0.0
    with pytest.raises(ConfigError, match=r"config.optim.eps=0.0 must be positive: Adam's update of a parameter whose "
                                          r"gradient is 0 is then 0 / 0"):
        validate(config, 1, 1, "cpu")

"""Progressive phases resume exactly inside any phase, each batch shape compiles once, and runs
evaluate at several sizes."""
import json

import jax
import numpy as np
import pytest

from conftest import tiny_config
from t2ijax.config import validate
from t2ijax.errors import ConfigError
from t2ijax.training.loop import Run

PHASES = ((16, 8, 3, 3e-3), (32, 4, 4, 1e-3))


def _phased(data_dir):
    config = tiny_config(data_dir)
    config.optim.update(schedule="constant", warmup_steps=1, learning_rate=3e-3)
    config.resolution.phases = PHASES
    config.total_steps = 7
    config.checkpoint.every_steps = 2
    return config


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_phases_change_size_batch_and_learning_rate_and_resume_inside_a_phase(data_dir, tmp_path):
    config = _phased(data_dir)
    straight = Run(config, str(tmp_path / "straight")).setup()
    assert [float(straight.schedule(s)) for s in (1, 2, 3, 6)] == pytest.approx([3e-3, 3e-3, 1e-3, 1e-3])
    assert [straight.device_batch(s)["x0"].shape for s in (0, 2, 3, 6)] == [(8, 16, 16, 3)] * 2 + [(4, 32, 32, 3)] * 2
    straight.train()
    assert sorted(straight.compiled_steps) == [(4, 32, 32, 3), (8, 16, 16, 3)]

    stopped = Run(config, str(tmp_path / "resumed")).setup()
    for step in range(5):  # stops after two steps of the second phase
        stopped.state, _ = stopped.train_step(stopped.state, stopped.device_batch(step))
    stopped.checkpointer.save(stopped.state, stopped.counters)
    stopped.checkpointer.close()
    resumed = Run(config, str(tmp_path / "resumed")).setup()
    assert int(resumed.state.step) == 5 and list(resumed.compiled_steps) == [(4, 32, 32, 3)]
    resumed.train()
    assert _leaves_equal(resumed.state.params, straight.state.params)
    assert _leaves_equal(resumed.state.opt_state, straight.state.opt_state)


@pytest.mark.slow
def test_buckets_compile_once_per_shape_and_runs_evaluate_at_other_sizes(data_dir, tmp_path, monkeypatch):
    config = tiny_config(data_dir)
    config.resolution.buckets = True
    config.data.aspect_ratios = (0.5, 1.0, 2.0)
    config.total_steps = 12
    config.eval.update(sizes=((16, 32),), metrics=("loss_t", "composition"))
    compiles = []
    original = Run._compile
    monkeypatch.setattr(Run, "_compile", lambda self, batch: compiles.append(batch["x0"].shape) or original(self, batch))
    run = Run(config, str(tmp_path / "run")).setup()
    shapes = {run.device_batch(s)["x0"].shape for s in range(12)}
    assert len(shapes) == 3 and all(h != w for _, h, w, _ in shapes - {(8, 32, 32, 3)})
    outputs = run.train()
    assert sorted(compiles) == sorted(shapes)  # each shape once, however often it came back
    with open(outputs["eval"]) as f:
        metrics = json.load(f)
    assert {"16x32/composition/shape", "16x32/loss_t[0.0,0.3)", "composition/shape"} <= set(metrics)


@pytest.mark.parametrize("overrides, message", [
    ({"resolution.phases": ((32, 8, 3, 1e-3),)}, "phases add up to 3 steps but config.total_steps=6"),
    ({"resolution.phases": ((16, 8, 6, 1e-3),)}, "last of config.resolution.phases trains at 16 px but "
                                                 "config.data.resolution=32"),
    ({"resolution.phases": ((18, 8, 3, 1e-3), (32, 8, 3, 1e-3))}, "resolution a multiple of 4"),
    ({"resolution.phases": ((16, 8, 6),)}, "must be \\(resolution, global_batch_size, steps, learning_rate\\)"),
    ({"eval.sizes": ((32, 30),)}, "config.eval.sizes entry \\(32, 30\\)"),
])
def test_bad_resolution_settings_fail_validation(data_dir, overrides, message):
    config = tiny_config(data_dir)
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        validate(config, num_devices=1)


def test_buckets_smaller_than_a_global_batch_are_left_out_and_counted():
    from t2ijax.data.run_data import training_sets

    found = {"report": {"32": {"kept": 13}},
             "sets": {"train/32/32x32": {"count": 10}, "train/32/24x44": {"count": 3}}}
    kept, report = training_sets(found, 32, [(32, 32), (24, 44)], 8)
    assert kept == ["train/32/32x32"]
    assert report == {"kept": 13, "left_out_small_buckets": {"24x44": 3}}
    assert found["report"]["32"] == {"kept": 13}  # the manifest itself is left as it was
    with pytest.raises(ConfigError, match=r"no bucket holds a global batch \(16\)"):
        training_sets(found, 32, [(32, 32), (24, 44)], 16)

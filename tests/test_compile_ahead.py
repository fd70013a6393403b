"""Every train step shape (each bucket of each resolution phase) is compiled at setup, timed, and
nothing compiles inside the loop; the persistent compilation cache follows config.compile."""
import contextlib
import os
import subprocess
import sys
import threading

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from conftest import tiny_config
from t2ijax.data import buckets
from t2ijax.training import checkpoint, compile_ahead, phases
from t2ijax.training.loop import Run

RATIOS = (0.5, 1.0)
PHASES = ((16, 8, 3, 3e-3), (32, 4, 3, 1e-3))
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # jax's event: XLA compiled or loaded a program


@contextlib.contextmanager
def backend_compiles(counted=lambda: True):
    """The names of the functions XLA compiles (or loads from the persistent cache) inside the block while
    `counted()`, as jax reports them to its monitoring listeners."""
    names = []

    def listener(event, seconds, **kwargs):
        if event == BACKEND_COMPILE and counted():
            names.append(kwargs["fun_name"])

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _bucketed_phases(data_dir):
    config = tiny_config(data_dir)
    config.resolution.update(buckets=True, phases=PHASES)
    config.data.aspect_ratios = RATIOS
    config.optim.update(schedule="constant", warmup_steps=1, learning_rate=3e-3)
    config.total_steps = 6
    config.eval.metrics = ("loss_t",)
    return config


def _expected_shapes(config) -> list[tuple[int, ...]]:
    """Each phase's buckets that the shapes' aspect ratios fill, from the bucket grid alone."""
    shapes = []
    for phase in phases.phases(config):
        grid = buckets.grid(phases.phase_config(config, phase))
        shapes += [(phase.global_batch_size, *size, 3) for size in sorted({buckets.nearest_bucket(grid, 1, a)
                                                                              for a in RATIOS})]
    return shapes


def _flag_calls(monkeypatch, owner, name: str, inside: list) -> None:
    """While owner.name runs, `inside` holds True."""
    original = getattr(owner, name)

    def flagged(*args, **kwargs):
        inside.append(True)
        try:
            return original(*args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(owner, name, flagged)


def test_buckets_and_phases_compile_before_step_0_and_never_again(data_dir, tmp_path, monkeypatch):
    config = _bucketed_phases(data_dir)
    periodic = []  # checkpoints, samples and evaluation compile their own programs
    for owner, name in ((Run, "write_samples"), (Run, "evaluate"), (checkpoint.Checkpointer, "save")):
        _flag_calls(monkeypatch, owner, name, periodic)
    with backend_compiles() as at_setup:
        run = Run(config, str(tmp_path / "run")).setup()
    expected = _expected_shapes(config)
    assert len(expected) == 4 and len({s[1:3] for s in expected}) == 4
    assert sorted(run.compile_seconds) == sorted(expected) and all(s > 0 for s in run.compile_seconds.values())
    assert at_setup.count("jit(train_step)") == len(expected)

    met = {run.device_batch(step)["x0"].shape for step in range(config.total_steps)}
    assert met <= set(expected) and len({s[0] for s in met}) == 2  # both phases
    with backend_compiles(counted=lambda: not periodic) as in_loop:
        run.train()
    assert in_loop == []


def test_a_missed_shape_fails_instead_of_compiling_in_the_loop(data_dir, tmp_path, monkeypatch):
    config = tiny_config(data_dir)
    monkeypatch.setattr(Run, "step_batches", lambda self: [])
    run = Run(config, str(tmp_path / "run")).setup()
    assert run.compiled_steps == {}
    with pytest.raises(RuntimeError, match=r"no train step was compiled for batches of \(8, 32, 32, 3\)"):
        run.train_step(run.state, run.device_batch(0))
    run.close()


def test_compile_all_runs_at_once_and_keeps_the_order():
    batches = [{"x0": jax.ShapeDtypeStruct((2, n, n, 3), "float32")} for n in (8, 4, 16)]
    all_running = threading.Barrier(3, timeout=30)  # broken unless the three run at the same time

    def compile_one(batch):
        all_running.wait()
        return batch["x0"].shape[1]

    compiled, seconds = compile_ahead.compile_all(compile_one, batches, threads=3)
    assert list(compiled.items()) == [((2, 8, 8, 3), 8), ((2, 4, 4, 3), 4), ((2, 16, 16, 3), 16)]
    assert list(seconds) == list(compiled)


def test_cache_directory_from_config_unless_jax_has_one(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_ahead, "_cache_dir_set_here", None)
    previous = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert compile_ahead.use_cache("", str(tmp_path)) is None
        assert compile_ahead.use_cache("{workdir}/cc", str(tmp_path)) == f"{tmp_path}/cc"
        assert jax.config.jax_compilation_cache_dir == f"{tmp_path}/cc"
        assert compile_ahead.use_cache("{workdir}/cc", "/other") == "/other/cc"  # the next run's own
        jax.config.update("jax_compilation_cache_dir", "/machine-wide")  # as JAX_COMPILATION_CACHE_DIR does
        assert compile_ahead.use_cache("{workdir}/cc", str(tmp_path)) == "/machine-wide"
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
        compilation_cache.reset_cache()


WRITES_TWO_CACHES = """
import sys
import jax, jax.numpy as jnp
from t2ijax.training import compile_ahead
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
for workdir, scale in zip(sys.argv[1:], (2.0, 3.0)):
    compile_ahead.use_cache("{workdir}/compile_cache", workdir)
    jax.jit(lambda x: x * scale)(jnp.ones(3)).block_until_ready()
"""


def test_each_run_writes_its_own_workdir_cache(tmp_path):
    workdirs = [str(tmp_path / name) for name in ("first", "second")]
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    subprocess.run([sys.executable, "-c", WRITES_TWO_CACHES, *workdirs], env=env, check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for workdir in workdirs:
        assert any("jit" in name for name in os.listdir(os.path.join(workdir, "compile_cache")))

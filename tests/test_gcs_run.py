"""A run whose workdir is a gs:// bucket (a GCS emulator on 127.0.0.1, tests/gcs_emulator.py): two
processes train and checkpoint, are killed, find their newest checkpoint damaged in the bucket, fall back
to the one before, set the bad one aside and end bit for bit like the same run on a local disk; a crash
in the middle of setting a checkpoint aside loses nothing good; the compilation cache and profiles reach
the bucket; a missing bucket or an unsupported scheme is a one-line error before anything compiles."""
import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import urllib.request

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import gcs_emulator
from conftest import error_line, tiny_config
from test_checkpoint_integrity import COUNTERS, _abstract, _equal, small_state
from test_fault_tolerance import REPO, TOTAL_STEPS, Launch, _tail, final_arrays
from t2ijax import storage
from t2ijax.ablation.results import _training_log
from t2ijax.config import validate
from t2ijax.errors import ConfigError, StorageError
from t2ijax.training import profiling
from t2ijax.training.checkpoint import Checkpointer


def _flip_a_bit_of_the_largest_array_file(step_dir: storage.Path) -> str:
    """Rewrites the largest file of orbax's array store (…/d/…) with one bit flipped; returns its path."""
    path = max((p for p in storage.files(step_dir) if p.parent.name == "d"), key=lambda p: p.stat().length)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    return os.fspath(path)


def _no_local_copy_of(url: str, *roots: str) -> None:
    """Nothing named after `url` (its scheme "gs:" or its bucket) was made under `roots`."""
    bucket = url.split("/")[2]
    for root in roots:
        for directory, names, _ in os.walk(root):
            assert not {"gs:", bucket} & set(names), f"{url} written to a local directory under {directory}"


def _complete_steps(checkpoints: storage.Path) -> list[int]:
    """The steps whose checkpoint orbax committed (on GCS: the commit marker it writes last)."""
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit() and
                  (p / "commit_success.txt").exists())


_SETUPS = itertools.count()


@pytest.fixture(scope="module")
def bucket_run(gcs, uninterrupted, tmp_path_factory, data_dir):
    """tests/test_fault_tolerance.py's 2-process x 2-device training with --workdir=gs://…/run, SIGKILLed at
    step 7, its newest complete checkpoint then damaged in the bucket, and relaunched to the end. Returns the
    launch, the uninterrupted run on disk, the log of the killed launch, and the steps fallen back to and damaged."""
    reference = uninterrupted(2)
    directory = tmp_path_factory.mktemp("gcs_run")
    # A bucket per setup: should pytest-xdist part the two tests below, the fixture runs again on the same emulator.
    bucket = gcs_emulator.create_bucket(gcs, f"t2ijax-run-{next(_SETUPS)}")
    launch = Launch(directory, data_dir, f"{bucket}/run", 2)
    codes = launch.run(at_step=7, signals=[signal.SIGKILL], delay=random.Random(2).uniform(0, 0.05))
    assert codes == [-signal.SIGKILL] * 2, _tail(launch.log)
    killed_log = launch.log
    # Checkpoints every 2 steps, 2 kept (a third may be half deleted): one to fall back to.
    before, damaged = _complete_steps(storage.Path(launch.checkpoints))[-2:]
    _flip_a_bit_of_the_largest_array_file(storage.Path(launch.checkpoints) / str(damaged))
    assert launch.run() == [0, 0], _tail(launch.log)
    return launch, reference, killed_log, (before, damaged)


@pytest.mark.slow
@pytest.mark.xdist_group("launches")  # shares the uninterrupted runs with tests/test_fault_tolerance.py
def test_a_killed_run_in_a_bucket_resumes_bit_equal_to_one_on_disk(bucket_run, tmp_path_factory):
    launch, reference, killed_log, (fallback, _) = bucket_run
    assert f"no checkpoint under {launch.checkpoints}: starting at step 0" in killed_log, _tail(killed_log)
    assert "is in a bucket, which cannot be locked" in killed_log, _tail(killed_log)
    assert f"step {TOTAL_STEPS}/{TOTAL_STEPS}" in launch.log, _tail(launch.log)
    expected, found = final_arrays(reference.checkpoints), final_arrays(launch.checkpoints)
    assert expected.keys() == found.keys() and any("ema_params" in k for k in found)
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name], err_msg=name)

    run = storage.Path(launch.workdir)
    for output in ("config.json", "eval.json", f"eval/step_{TOTAL_STEPS:07d}.json", "samples/prompts.txt",
                   f"samples/step_{TOTAL_STEPS:07d}.png", f"checkpoints/{TOTAL_STEPS}/meta"):
        assert (run / output).exists(), output
    assert (run / "eval.json").read_text() == (run / f"eval/step_{TOTAL_STEPS:07d}.json").read_text()
    assert (run / f"samples/step_{TOTAL_STEPS:07d}.png").read_bytes().startswith(b"\x89PNG")
    loss, _, _ = _training_log(run / "tensorboard")  # the relaunch's: the killed one had uploaded none yet
    assert sorted(loss) == list(range(fallback + 1, TOTAL_STEPS + 1)), sorted(loss)
    _no_local_copy_of(launch.workdir, REPO, str(tmp_path_factory.getbasetemp()))


@pytest.mark.slow  # as the test above: both read bucket_run, so they must run one after the other
@pytest.mark.xdist_group("launches")
def test_a_corrupt_newest_checkpoint_in_the_bucket_falls_back_to_the_one_before(bucket_run):
    launch, _, _, (before, damaged) = bucket_run
    assert f"checkpoint {damaged} does not match its digest" in launch.log, _tail(launch.log)
    assert f"resuming from step {before} (checkpoint {launch.checkpoints}/{before}; " in launch.log, _tail(launch.log)
    assert "fallbacks 1" in launch.log, _tail(launch.log)
    checkpoints = storage.Path(launch.checkpoints)
    assert (checkpoints / f"corrupt-{damaged}" / "meta").is_dir()
    # keep-N counts good checkpoints only, and the set-aside one is not listed as a step.
    assert _complete_steps(checkpoints) == [TOTAL_STEPS - 2, TOTAL_STEPS]


@pytest.mark.parametrize("crash", ["copying", "deleting, commit marker first", "deleting, arrays first"])
def test_a_crash_while_setting_aside_never_loses_the_good_checkpoint(gcs, monkeypatch, crash):
    """A bad checkpoint in a bucket is set aside by copying every object, then deleting it. A crash half-way
    through either leaves it to fail verification again (set aside at the next start) or uncommitted (orbax
    removes it at the next start); the checkpoint before it is resumed from every time."""
    bucket = gcs_emulator.create_bucket(gcs, "t2ijax-aside-" + "".join(c for c in crash if c.isalpha())[:20])
    directory = f"{bucket}/checkpoints"
    saver = Checkpointer(directory, keep=2)
    for step in (1, 2, 3):
        saver.save(small_state(step), COUNTERS)
    saver.close()
    _flip_a_bit_of_the_largest_array_file(storage.Path(directory) / "3")
    path_type = type(storage.Path(directory))
    copy, copied = path_type.copy, []

    def copy_a_few_then_crash(self, target, *args, **kwargs):
        if len(copied) == 4:
            raise KeyboardInterrupt("killed while copying checkpoint 3")
        copied.append(self)
        return copy(self, target, *args, **kwargs)

    def delete_half_then_crash(self):
        files = sorted(storage.files(self), key=lambda p: (p.name != "commit_success.txt", str(p)),
                       reverse=crash.endswith("arrays first"))
        for path in files[:len(files) // 2]:
            path.unlink()
        raise KeyboardInterrupt("killed while deleting checkpoint 3")

    with monkeypatch.context() as patch:
        if crash == "copying":
            patch.setattr(path_type, "copy", copy_a_few_then_crash)
        else:
            patch.setattr(path_type, "rmtree", delete_half_then_crash)
        with pytest.raises(KeyboardInterrupt):
            Checkpointer(directory, keep=2).resume(_abstract(small_state(0)))

    checkpointer = Checkpointer(directory, keep=2)
    state, counters = checkpointer.resume(_abstract(small_state(0)))
    assert _equal(state, small_state(2)) and checkpointer.steps() == [2]
    checkpointer.save(small_state(3), counters)  # the step is written again, and listed
    checkpointer.close()
    assert Checkpointer(directory, read_only=True).steps() == [2, 3]
    aside = [p for p in storage.Path(directory).iterdir() if p.name.startswith("corrupt-3")]
    assert aside and all((p / "commit_success.txt").exists() for p in aside), aside
    assert _equal(Checkpointer(directory, read_only=True).restore(_abstract(small_state(0)), 2), small_state(2))


def test_a_save_into_a_bucket_deleted_under_the_run_fails_in_one_line(gcs):
    bucket = gcs_emulator.create_bucket(gcs, "t2ijax-deleted")
    checkpointer = Checkpointer(f"{bucket}/checkpoints", async_save=False)
    checkpointer.save(small_state(1), COUNTERS)
    for path in storage.files(storage.Path(bucket)):
        path.unlink()
    urllib.request.urlopen(urllib.request.Request(f"{gcs}/storage/v1/b/{bucket[5:]}", method="DELETE")).close()
    with pytest.raises(StorageError) as error:
        checkpointer.save(small_state(2), COUNTERS)
    assert str(error.value).startswith(f"the checkpoint of step 2 could not be written under {bucket}/checkpoints "
                                       "(not found: ")
    assert "check that the bucket exists" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("workdir, message", [
    ("gs://t2ijax-no-such-bucket/run", "the bucket gs://t2ijax-no-such-bucket does not exist"),
    ("s3://bucket/run", "s3:// is not supported; use a local path or gs://BUCKET/PATH"),
])
def test_a_missing_bucket_or_another_scheme_is_one_line_before_compiling(gcs, tmp_path, data_dir, workdir,
                                                                          message):
    launch = Launch(tmp_path, data_dir, workdir, 1)
    proc = subprocess.run([sys.executable, "-m", "t2ijax.main", *launch.args], cwd=REPO, env=launch.env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and message in error_line(proc)
    assert "compiled" not in proc.stderr and "data:" not in proc.stderr, proc.stderr


def test_a_tensorboard_dir_of_another_scheme_is_refused(tmp_path):
    config = tiny_config(str(tmp_path))
    config.log.tensorboard_dir = "s3://bucket/tensorboard"
    with pytest.raises(ConfigError, match="config.log.tensorboard_dir: s3://bucket/tensorboard: s3:// is not supp"):
        validate(config, 1)


COMPILES_TWICE = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp
    from jax import monitoring
    from t2ijax.training import compile_ahead
    hits = []
    monitoring.register_event_listener(lambda event, **_: hits.append(event) if event.endswith("cache_hits") else None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    compile_ahead.use_cache("{workdir}/compile_cache", sys.argv[1])
    jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.ones(3)).block_until_ready()
    print("cache hits:", len(hits))
""")


def test_the_compilation_cache_of_a_bucket_run_is_read_back(gcs):
    """jax writes its persistent cache through etils.epath (gcsfs here): a second process loads from it."""
    workdir = f"{gcs_emulator.create_bucket(gcs, 't2ijax-cache')}/run"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    outputs = [subprocess.run([sys.executable, "-c", COMPILES_TWICE, workdir], cwd=REPO, env=env, check=True,
                              capture_output=True, text=True).stdout for _ in range(2)]
    assert "cache hits: 0" in outputs[0] and "cache hits: 0" not in outputs[1], outputs
    assert any(p.name.startswith("jit__lambda") for p in (storage.Path(workdir) / "compile_cache").iterdir())
    _no_local_copy_of(workdir, REPO)


def test_a_profile_of_a_bucket_run_is_uploaded(gcs, tmp_path):
    workdir = f"{gcs_emulator.create_bucket(gcs, 't2ijax-profile')}/run"
    profile = ml_collections.ConfigDict(dict(start_step=0, steps=1, hosts=()))
    with profiling.ProfileWindow(profile, workdir, 0) as window:
        window.before_step(0)
        out = jax.jit(lambda x: x * 2)(jnp.ones(3))
        window.after_step(1, out)
    traces = [p for p in storage.files(storage.Path(profiling.profile_dir(workdir))) if p.name.endswith(".xplane.pb")]
    assert len(traces) == 1 and traces[0].stat().length > 0
    assert not os.path.exists(window.local)  # the local copy is gone

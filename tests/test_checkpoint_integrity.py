"""Checkpoints are verified on restore (a corrupt newest one falls back to the one before), and a
full or read-only disk fails a save or a record shard's write cleanly, leaving what was written intact."""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from t2ijax.errors import ConfigError, NonFiniteError
from t2ijax.training.checkpoint import Checkpointer
from t2ijax.training.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTERS = {"skipped_steps": 0, "restores": 0, "fallbacks": 0}


def small_state(step: int, size: int = 4096) -> TrainState:
    """A TrainState whose arrays are sharded like a run's (on a one-device mesh)."""
    replicated = NamedSharding(jax.make_mesh((1,), ("data",)), PartitionSpec())
    values = np.random.default_rng(step).normal(size=size).astype(np.float32)
    tree = {"step": np.int32(step), "params": {"w": values}, "opt_state": {"mu": values / 2},
            "rng": np.array([0, step], np.uint32)}
    return TrainState(**jax.device_put(tree, replicated))


def _abstract(state: TrainState) -> TrainState:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _largest_data_file(step_dir: str) -> str:
    files = [os.path.join(root, f) for root, _, names in os.walk(step_dir) for f in names if "/d/" in root + "/"]
    return max(files, key=os.path.getsize)


def _flip_a_bit(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 1]))


def _truncate(path: str) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _without_digests(step_dir: str) -> None:
    """A flipped bit, and the digests that would show it deleted."""
    _flip_a_bit(_largest_data_file(step_dir))
    shutil.rmtree(os.path.join(step_dir, "meta"))


@pytest.mark.parametrize("damage", [_flip_a_bit, _truncate, lambda path: os.remove(path), _without_digests])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage):
    directory = str(tmp_path / "checkpoints")
    saver = Checkpointer(directory, keep=2)
    for step in (1, 2, 3):
        saver.save(small_state(step), dict(COUNTERS, restores=1))
    saver.close()
    assert saver.steps() == [2, 3]
    step_dir = os.path.join(directory, "3")
    damage(step_dir if damage is _without_digests else _largest_data_file(step_dir))

    checkpointer = Checkpointer(directory, keep=2)
    state, counters = checkpointer.resume(_abstract(small_state(0)))
    assert _equal(state, small_state(2))
    assert counters == {"skipped_steps": 0, "restores": 2, "fallbacks": 1}
    assert checkpointer.steps() == [2] and os.path.isdir(os.path.join(directory, "corrupt-3"))
    # The step can be written again; keep-N counts good checkpoints only, so step 2 stays.
    checkpointer.save(small_state(3), counters)
    checkpointer.close()
    assert Checkpointer(directory).steps() == [2, 3]


def test_checkpoints_that_do_not_fit_the_config_are_reported_and_left_in_place(tmp_path):
    directory = str(tmp_path / "checkpoints")
    saver = Checkpointer(directory, keep=2)
    saver.save(small_state(1), COUNTERS)
    saver.close()
    with pytest.raises(ConfigError, match="restores into this config"):
        Checkpointer(directory).resume(_abstract(small_state(0, size=100)))
    assert sorted(os.listdir(directory)) == ["1"]


def test_when_every_checkpoint_is_unreadable_it_says_so_and_moves_nothing(tmp_path):
    directory = str(tmp_path / "checkpoints")
    saver = Checkpointer(directory, keep=2)
    for step in (1, 2):
        saver.save(small_state(step), COUNTERS)
    saver.close()
    shutil.rmtree(os.path.join(directory, "2", "meta"))
    _truncate(_largest_data_file(os.path.join(directory, "1")))
    with pytest.raises(ConfigError, match=r"all 2 checkpoints under .* are unreadable \(checkpoint 2 has no digests"
                                          r".*checkpoint 1 cannot be read") as error:
        Checkpointer(directory).resume(_abstract(small_state(0)))
    assert "this config" not in str(error.value)
    assert sorted(os.listdir(directory)) == ["1", "2"]


def test_a_state_holding_a_nan_is_never_written(tmp_path):
    directory = str(tmp_path / "checkpoints")
    saver = Checkpointer(directory, keep=2)
    saver.save(small_state(1), COUNTERS)
    bad = small_state(2)
    bad = bad.replace(opt_state={"mu": bad.opt_state["mu"].at[7].set(np.inf)})
    with pytest.raises(NonFiniteError, match=r"state of step 2 holds a NaN or Inf \(first: state.opt_state\['mu'\], "
                                             r"1 arrays in all\); its checkpoint was not written, the last one is step 1"):
        saver.save(bad, COUNTERS)
    saver.close()
    assert Checkpointer(directory).steps() == [1]


def test_a_bad_step_named_by_a_reader_is_a_one_line_error(tmp_path):
    directory = str(tmp_path / "checkpoints")
    saver = Checkpointer(directory, keep=2)
    saver.save(small_state(1), COUNTERS)
    saver.close()
    _flip_a_bit(_largest_data_file(os.path.join(directory, "1")))
    with pytest.raises(ConfigError, match="checkpoint 1 does not match its digest"):
        Checkpointer(directory, read_only=True).restore(_abstract(small_state(0)), 1)


# Runs inside its own mount namespace, on a tmpfs of FULL_SIZE bytes mounted at argv[1].
FULL_DISK = textwrap.dedent("""
    import json, os, subprocess, sys
    import numpy as np
    sys.path.insert(0, "tests")
    from test_checkpoint_integrity import COUNTERS, _abstract, _equal, small_state
    from t2ijax.data import records
    from t2ijax.errors import StorageError
    from t2ijax.training.checkpoint import Checkpointer

    disk = sys.argv[1]
    report = {}

    def fill():
        fd = os.open(os.path.join(disk, "filler"), os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:
            pass
        os.close(fd)

    def try_save(step):
        checkpointer = Checkpointer(os.path.join(disk, "checkpoints"), keep=1)
        try:
            checkpointer.save(small_state(step), COUNTERS)
            checkpointer.wait()
            return "saved"
        except StorageError as e:
            return str(e)

    def intact():
        checkpointer = Checkpointer(os.path.join(disk, "checkpoints"), read_only=True)
        return checkpointer.steps() == [1] and _equal(checkpointer.restore(_abstract(small_state(0))), small_state(1))

    def write_shard(index):
        try:
            records.write_shard(os.path.join(shards, records.shard_name(index)), [example] * 4)
            return "written"
        except Exception as e:  # noqa: BLE001 - the report says which error it was
            return f"{type(e).__name__}: {e}"

    report["first"] = try_save(1)
    shards = os.path.join(disk, "records")
    os.makedirs(shards)
    example = {"key": "a", "latent": np.ones((8, 8, 4), np.float32)}
    report["first_shard"] = write_shard(0)
    fill()
    report["full"] = try_save(2)
    report["full_intact"] = intact()
    report["shard"] = write_shard(1)
    report["shard_files"] = sorted(os.listdir(shards))
    finished = records.RecordSet(shards, [(records.shard_name(0), 4)])
    report["first_shard_keys"] = [r["key"] for r in finished.read(range(4))]
    os.remove(os.path.join(disk, "filler"))
    subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
    report["read_only"] = try_save(3)
    report["read_only_intact"] = intact()
    print("REPORT" + json.dumps(report))
""")


def in_private_tmpfs(disk, size: str, command: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Runs the shell `command` (its $0, $1 ...: `args`) with a tmpfs of `size` mounted at `disk` in a private
    mount namespace (unshare(1)); fails, never skips, where that cannot be done: the disk-full tests must run."""
    disk.mkdir()
    script = f"mount -t tmpfs -o size={size} tmpfs {disk} && {command}"
    result = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script, *args], cwd=REPO,
                            capture_output=True, text=True, timeout=300, **kwargs)
    if "mount:" in result.stderr or "unshare:" in result.stderr:
        pytest.fail(f"cannot mount a private tmpfs here ({result.stderr.strip()}): the disk-full tests need "
                    "unshare(1) with user and mount namespaces")
    return result


def test_a_full_or_read_only_disk_fails_cleanly_and_keeps_the_old_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    result = in_private_tmpfs(disk, "256k", f'exec {sys.executable} -c "$0" {disk}', FULL_DISK)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["first"] == "saved", report
    for case in ("full", "read_only"):
        assert "could not be written" in report[case] and "(steps 1) are untouched" in report[case], report
        assert report[f"{case}_intact"], case
    assert "No space left on device" in report["full"] and " MiB free; " in report["full"]
    assert "Read-only file system" in report["read_only"]
    assert report["first_shard"] == "written"
    shard = report["shard"]  # the disk filled up while writing the second shard
    assert shard.startswith("StorageError: ") and "No space left on device" in shard and "\n" not in shard, shard
    assert f"{disk}/records/shard-00001.array_record" in shard, shard
    assert report["shard_files"] == ["shard-00000.array_record"]  # no partial shard, the finished one kept
    assert report["first_shard_keys"] == ["a"] * 4


# In a private tmpfs: train, fill the disk once checkpoint 2 is complete, free it, train again.
FULL_DURING_TRAINING = textwrap.dedent("""
    disk=$1; log=$2; shift 2
    "$@" > "$log.1" 2>&1 &
    trainer=$!
    while [ ! -d "$disk/workdir/checkpoints/2" ] && kill -0 $trainer 2>/dev/null; do sleep 0.02; done
    head -c 1G /dev/zero > "$disk/filler" 2>/dev/null
    wait $trainer; echo "exit $?" >> "$log.1"
    rm "$disk/filler"
    "$@" > "$log.2" 2>&1; echo "exit $?" >> "$log.2"
    cp -r "$disk/workdir/checkpoints" "$log.checkpoints"
""")


@pytest.mark.xdist_group("launches")  # shares the uninterrupted run with tests/test_fault_tolerance.py
def test_a_disk_full_during_training_stops_at_the_failing_save_and_the_relaunch_resumes_exactly(
        tmp_path, data_dir, uninterrupted):
    from test_fault_tolerance import TOTAL_STEPS, Launch, final_arrays

    disk, log = tmp_path / "disk", str(tmp_path / "log")
    launch = Launch(tmp_path, data_dir, disk / "workdir", 1)
    result = in_private_tmpfs(disk, "24m", FULL_DURING_TRAINING, "sh", str(disk), log, sys.executable, "-m",
                              "t2ijax.main", *launch.args, env=launch.env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(log + ".1") as f:
        first = f.read()
    assert first.endswith("exit 1\n"), first[-3000:]
    error = first.strip().splitlines()[-2]
    failed = re.fullmatch(rf"error: the checkpoint of step (\d+) could not be written under {disk}/workdir/checkpoints "
                          r"\(0\.0 MiB free; .*No space left on device.*\); the complete checkpoints \(steps ([\d, ]+)\) "
                          r"are untouched: free space .*", error)
    assert failed, error
    step, kept = int(failed.group(1)), [int(s) for s in failed.group(2).split(", ")]
    assert max(kept) < step and "Traceback" not in first
    logged = [int(s) for s in re.findall(rf"\bstep (\d+)/{TOTAL_STEPS}\b", first)]
    # Stopped once the write failed (a step checks for it), at the latest where the next save (every 2 steps) waits.
    assert max(logged) <= step + 2, (step, logged)
    with open(log + ".2") as f:
        second = f.read()
    assert second.endswith("exit 0\n") and f"resuming from step {max(kept)} " in second, second[-3000:]
    expected, found = final_arrays(uninterrupted(1).checkpoints), final_arrays(log + ".checkpoints")
    assert expected.keys() == found.keys()
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name], err_msg=name)

"""Killed runs resume exactly: SIGKILL, SIGTERM and SIGINT (Ctrl-C) at several steps, then the same
command again, end bit for bit where an uninterrupted run ends; on 1 process x 4 devices and on 2
processes x 2 devices (SIGTERM sent to one host only), the parameters sharded over all 4 devices
(fsdp) so that every host writes and reads only its own shards. A signal during setup exits with
the preemption code."""
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import env_with_devices
from t2ijax import storage
from t2ijax.training.preemption import EXIT_CODE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 14  # on several processes the hosts agree on the step to stop at a few steps after SIGTERM
DEVICES = 4

CONFIG = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import tiny_config

    def get_config():
        c = tiny_config({data_dir!r})
        c.total_steps = {total}
        c.mesh.update(data=1, fsdp=-1, tensor=1)
        c.checkpoint.update(every_steps=2, keep=2)
        c.log.every_steps = 1
        c.ema.decay = 0.9
        c.eval.metrics = ("loss_t",)  # compared across topologies by tests/test_multihost.py
        return c
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launch:
    """The same training command, started again and again in `workdir` on `processes` processes."""

    def __init__(self, config_dir, data_dir, workdir, processes):
        config = os.path.join(config_dir, "config.py")
        with open(config, "w") as f:
            f.write(CONFIG.format(tests=os.path.join(REPO, "tests"), data_dir=data_dir, total=TOTAL_STEPS))
        self.args = [f"--config={config}", f"--workdir={workdir}"]
        self.workdir = str(workdir)
        self.processes = processes
        self.env = env_with_devices(DEVICES // processes)
        self.checkpoints = os.path.join(workdir, "checkpoints")

    def start(self) -> list[subprocess.Popen]:
        if self.processes == 1:
            commands = [[sys.executable, "-m", "t2ijax.main", *self.args]]
        else:
            address = f"127.0.0.1:{_free_port()}"
            commands = [[sys.executable, "-m", "t2ijax.main", *self.args,
                         f"--config.distributed.coordinator_address={address}", "--config.distributed.num_processes=2",
                         f"--config.distributed.process_id={i}"] for i in range(2)]
        return [subprocess.Popen(c, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for c in commands]

    def run(self, at_step=None, signals=(), delay=0.0, to=None, at_line=None) -> list[int]:
        """Runs to the end, or sends `signals` (gap `delay` before each) to the processes `to` (default: all)
        once process 0 logs `at_step` (or a line matching `at_line`)."""
        procs = self.start()
        log = []
        at_line = at_line or (at_step is not None and rf"\bstep {at_step}/{TOTAL_STEPS}\b")
        if at_line:
            for line in procs[0].stdout:
                log.append(line)
                if re.search(at_line, line):
                    for sig in signals:
                        time.sleep(delay)
                        for p in (procs if to is None else [procs[i] for i in to]):
                            p.send_signal(sig)
                    break
        codes = []
        for p in procs:
            out, _ = p.communicate(timeout=300)
            log.append(out)
            codes.append(p.returncode)
        self.log = "".join(log)
        return codes


def final_arrays(checkpoints: str) -> dict[str, np.ndarray]:
    """Every array of the newest checkpoint (on disk or in a bucket), read whole into host memory."""
    steps = [int(path.name) for path in storage.Path(checkpoints).iterdir() if path.name.isdigit()]
    path = storage.Path(checkpoints) / str(max(steps)) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    arrays = checkpointer.restore(path, restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                                                   tree))
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(arrays)}


def _tail(log: str) -> str:
    """The last lines of a launch's output without the frames of Python's fatal-error stack dumps."""
    lines = [line for line in log.splitlines() if not line.startswith(("  File", "Extension modules"))]
    return "\n".join(lines[-60:])


def _assert_resumes_exactly(straight: Launch, killed: Launch, kill_steps, stops):
    """`kill_steps`: (step, delay) of each SIGKILL; `stops`: (step, signal names, processes signalled) of
    each stop that must write a checkpoint at the step it names and exit with the preemption code."""
    processes = killed.processes
    resumes = 0
    # Checkpoints every 2 steps, asynchronously: a kill lands before one, or while one is written.
    for step, delay in kill_steps:
        codes = killed.run(at_step=step, signals=[signal.SIGKILL], delay=delay)
        assert codes == [-signal.SIGKILL] * processes, _tail(killed.log)
        if resumes == 0:
            assert f"no checkpoint under {killed.checkpoints}: starting at step 0" in killed.log, _tail(killed.log)
        resumes += "resuming from step" in killed.log
    stopped_at = 0
    for step, signals, to in stops:
        # Twice in a row, the second lands while the checkpoint is written: it changes nothing.
        codes = killed.run(at_step=step, signals=[getattr(signal, name) for name in signals], delay=0.01, to=to)
        assert codes == [EXIT_CODE] * processes, _tail(killed.log)
        assert "Traceback" not in killed.log, _tail(killed.log)
        resumes += "resuming from step" in killed.log
        stopped_at = int(re.search(r"checkpoint written at step (\d+)", killed.log).group(1))
        assert step <= stopped_at <= TOTAL_STEPS and str(stopped_at) in os.listdir(killed.checkpoints)
        if processes == 1:  # on several, the signalled host may not be process 0, whose output is read
            assert f"{signals[0]} at step {stopped_at}: checkpoint written" in killed.log, _tail(killed.log)
    assert killed.run() == [0] * processes, _tail(killed.log)
    assert (f"resuming from step {stopped_at} (checkpoint {killed.checkpoints}/{stopped_at}; " in killed.log
            and f"restores {resumes + 1}," in killed.log), _tail(killed.log)

    expected, found = final_arrays(straight.checkpoints), final_arrays(killed.checkpoints)
    assert expected.keys() == found.keys() and any("ema_params" in k for k in found)
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name], err_msg=name)


@pytest.mark.xdist_group("launches")  # shares the uninterrupted runs with tests/test_multihost.py
def test_sigkill_and_sigterm_then_resume_equals_uninterrupted(uninterrupted, tmp_path, data_dir):
    rng = random.Random(0)
    kills = [(rng.choice([1, 2, 3]), rng.uniform(0, 0.05)), (rng.choice([4, 5]), rng.uniform(0, 0.05))]
    stops = [(6, ["SIGTERM", "SIGTERM"], None), (9, ["SIGINT", "SIGINT"], None)]
    _assert_resumes_exactly(uninterrupted(1), Launch(tmp_path, data_dir, tmp_path / "killed", 1), kills, stops)


@pytest.mark.xdist_group("launches")
def test_kill_and_resume_on_2_processes_x_2_devices(uninterrupted, tmp_path, data_dir):
    rng = random.Random(1)
    # The documented case: SIGTERM reaches one host only (here not the coordinator); both stop at one step.
    _assert_resumes_exactly(uninterrupted(2), Launch(tmp_path, data_dir, tmp_path / "killed", 2),
                            [(rng.choice([3, 4, 5]), rng.uniform(0, 0.05))], [(6, ["SIGTERM", "SIGTERM"], [1])])


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_during_setup_exits_with_the_preemption_code(tmp_path, data_dir, signal_name):
    launch = Launch(tmp_path, data_dir, tmp_path / "workdir", 1)
    codes = launch.run(at_line=r"starting at step 0", signals=[getattr(signal, signal_name)])
    assert codes == [EXIT_CODE], launch.log[-3000:]
    assert f"{signal_name} during setup, before the first step: stopped with exit code {EXIT_CODE}" in launch.log
    assert "Traceback" not in launch.log

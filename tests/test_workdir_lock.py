"""One trainer per workdir: a second `t2ijax.main` on a live run is refused at once and changes
nothing there; once the first is killed (SIGKILL: no cleanup), the next start takes the run over."""
import hashlib
import os
import re
import signal
import subprocess
import sys
import time

from test_fault_tolerance import REPO, Launch


def _snapshot(directory: str) -> dict[str, str]:
    """Every file and folder under `directory`, with the content hash of each file."""
    found = {}
    for root, folders, files in os.walk(directory):
        for name in folders:
            found[os.path.relpath(os.path.join(root, name), directory)] = "folder"
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.relpath(os.path.join(root, name), directory)] = hashlib.sha256(f.read()).hexdigest()
    return found


def _wait_for_line(proc: subprocess.Popen, pattern: str) -> str:
    log = []
    for line in proc.stdout:
        log.append(line)
        if re.search(pattern, line):
            return "".join(log)
    raise AssertionError("".join(log)[-3000:])


def test_a_second_trainer_is_refused_and_a_killed_ones_workdir_is_taken_over(tmp_path, data_dir):
    launch = Launch(tmp_path, data_dir, tmp_path / "workdir", 1)
    first = launch.start()[0]
    try:
        _wait_for_line(first, r"\bstep 1/")
        first.send_signal(signal.SIGSTOP)  # frozen mid-run: nothing it writes can hide a change by the second
        before = _snapshot(launch.workdir)
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "t2ijax.main", *launch.args], cwd=REPO, env=launch.env,
                                capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        assert second.returncode == 1 and took < 30, (took, second.stderr[-3000:])
        error = second.stderr.strip().splitlines()[-1]
        assert re.fullmatch(rf"error: {re.escape(launch.workdir)} is in use by another trainer \(host [^,]+, pid "
                            rf"{first.pid}, started [0-9T:+-]+\); .* pass another --workdir", error), error
        assert _snapshot(launch.workdir) == before
    finally:
        first.kill()  # SIGKILL, also while stopped: the lock is released by the kernel, nothing else
        first.communicate()

    third = launch.start()[0]
    log = _wait_for_line(third, r"\bstep \d+/")
    third.send_signal(signal.SIGTERM)
    third.communicate(timeout=120)
    assert "resuming from step" in log or "starting at step 0" in log
    assert third.returncode == 75, log[-3000:]

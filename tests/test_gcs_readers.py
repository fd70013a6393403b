"""The reader commands on a run in a bucket (the GCS emulator): sample, evaluate and export read a gs://
workdir and give what they give on the same run on disk; a bucket that does not exist or a scheme that is
not supported is a one-line error before anything compiles."""
import json
import pathlib
import re
import subprocess
import sys

import gcsfs
import jax
import pytest
from absl import flags
from PIL import Image

import gcs_emulator
from t2ijax import evaluate, storage
from t2ijax.ablation import grid
from t2ijax.ablation.report import write_axis_report, write_combined_report
from t2ijax.ablation.results import read_csv
from t2ijax.errors import ConfigError
from t2ijax.interop.run_export import export_run

TINY_AXIS = str(pathlib.Path(__file__).with_name("tiny_axis.py"))
FAST = ["--steps=2", "--seed=3"]


@pytest.fixture(scope="module")
def bucket_run(run_workdir, gcs) -> str:
    """The session's tiny run, uploaded to gs://t2ijax-readers/run."""
    bucket = gcs_emulator.create_bucket(gcs, "t2ijax-readers")
    gcsfs.GCSFileSystem().put(run_workdir, f"{bucket}/run", recursive=True)
    return f"{bucket}/run"


@pytest.mark.parametrize("data", [b"ends in a carriage return\r", b"\r\n\r", bytes(range(256)), b""])
def test_the_emulator_keeps_the_exact_bytes_of_an_upload(gcs, data):
    """Every bucket fixture relies on it: the emulator once cut a trailing carriage return, and a checkpoint
    uploaded with one such file could not be read back (OUT_OF_RANGE)."""
    bucket = gcs_emulator.create_bucket(gcs, f"t2ijax-bytes-{len(data)}")
    gcsfs.GCSFileSystem().pipe(f"{bucket}/object", data)
    assert storage.Path(f"{bucket}/object").read_bytes() == data


def test_a_multipart_upload_framed_with_crlf_is_split_exactly():
    body = (b'--b1\r\nContent-Type: application/json\r\n\r\n{"name": "x"}\r\n--b1\r\n'
            b"Content-Type: image/png\r\n\r\nab\r\r\n\r\r\n--b1--\r\n")
    assert gcs_emulator.split_multipart_upload(body, 'multipart/related; boundary="b1"') == {
        "meta": {"name": "x"}, "content": b"ab\r\r\n\r", "content-type": "image/png"}


def _cli(module: str, *args: str, cwd) -> str:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_sample_reads_a_bucket_run_and_writes_to_the_bucket(bucket_run, run_workdir, tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    remote = f"{bucket_run}/samples/grid.png"
    printed = _cli("t2ijax.sample", f"--workdir={bucket_run}", f"--out={remote}", "--prompt=a red circle",
                   "--prompt=a blue square", *FAST, cwd=work)
    assert f"wrote {remote} (2 image(s), step 0)" in printed
    _cli("t2ijax.sample", f"--workdir={run_workdir}", f"--out={tmp_path / 'grid.png'}", "--prompt=a red circle",
         "--prompt=a blue square", *FAST, cwd=work)
    assert storage.Path(remote).read_bytes() == (tmp_path / "grid.png").read_bytes()
    assert list(work.iterdir()) == []  # nothing written to a local directory named after the URL


def _evaluate(*args: str) -> None:
    flags.FLAGS(["evaluate", *args, "--metrics=loss_t,composition", "--num_samples=4", *FAST])
    try:
        evaluate.main(["evaluate"])
    finally:
        flags.FLAGS.unparse_flags()


def test_evaluate_reads_a_bucket_run_and_writes_its_json_there(bucket_run, run_workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _evaluate(f"--workdir={bucket_run}")
    _evaluate(f"--workdir={run_workdir}", f"--out={tmp_path / 'local.json'}")
    remote = json.loads(storage.Path(f"{bucket_run}/eval/evaluate_step_0000000.json").read_text())
    local = json.loads((tmp_path / "local.json").read_text())
    assert remote == local and "composition/shape" in remote and remote["step"] == 0
    assert list(tmp_path.iterdir()) == [tmp_path / "local.json"]


def test_export_reads_a_bucket_run_and_writes_to_the_bucket(bucket_run, run_workdir, tmp_path):
    assert export_run(bucket_run, f"{bucket_run}/exported") == (0, "params")
    assert export_run(run_workdir, str(tmp_path / "exported")) == (0, "params")
    remote = storage.Path(f"{bucket_run}/exported")
    names = sorted(p.name for p in (tmp_path / "exported").iterdir())
    assert names == sorted(p.name for p in remote.iterdir()) and "diffusion_pytorch_model.safetensors" in names
    for name in names:
        assert (remote / name).read_bytes() == (tmp_path / "exported" / name).read_bytes(), name


@pytest.mark.parametrize("url, message", [
    ("gs://t2ijax-no-such-bucket/run", "the bucket gs://t2ijax-no-such-bucket does not exist; create it"),
    ("s3://bucket/run", "s3:// is not supported; use a local path or gs://BUCKET/PATH"),
])
def test_a_missing_bucket_or_another_scheme_is_one_line_before_any_compile(gcs, run_workdir, tmp_path, url,
                                                                          message):
    compiles = []
    listener = lambda event, duration, **_: compiles.append(event) if "compil" in event else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with pytest.raises(SystemExit) as exit:
            _evaluate(f"--workdir={url}")
        assert str(exit.value).startswith("error: ") and message in str(exit.value) and "\n" not in str(exit.value)
        for workdir, out in ((url, str(tmp_path / "out")), (run_workdir, f"{url}/exported")):
            with pytest.raises(ConfigError, match=re.escape(message)):
                export_run(workdir, out)
        assert compiles == []
        jax.jit(lambda x: x * 7 + 1)(jax.numpy.arange(13.0))
        assert compiles  # the listener sees a compile
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _finished_run(workdir, config, loss: float) -> None:
    """What a finished run leaves for its report: config.json, eval.json at total_steps, a periodic
    evaluation, the final sample grid and the training loss in TensorBoard events."""
    from t2ijax.metrics.tensorboard_events import tensorboard_writer

    (workdir / "eval").mkdir(parents=True)
    (workdir / "config.json").write_text(config.to_json_best_effort())
    (workdir / "eval.json").write_text(json.dumps({"step": config.total_steps, "loss_t[0.0,0.3)": loss}))
    (workdir / "eval" / "step_0000002.json").write_text(json.dumps({"step": 2, "loss_t[0.0,0.3)": 2 * loss}))
    (workdir / "samples").mkdir()
    Image.new("RGB", (16, 16), (int(100 * loss), 30, 60)).save(workdir / "samples" / "step_0000004.png")
    writer = tensorboard_writer(str(workdir / "tensorboard"))
    for step in (2, 4):
        writer.write_scalars(step, {"loss": loss / step, "images_per_sec": 10.0 * step})
    writer.close()


def test_an_ablation_report_reads_and_writes_a_grid_in_a_bucket(bucket_run, tmp_path, monkeypatch):
    axis = grid.load_axis(TINY_AXIS)
    local, remote = str(tmp_path / "grid"), bucket_run.rsplit("/", 1)[0] + "/grid"
    overrides = {"data.data_dir": str(tmp_path / "data")}
    for run, loss in zip(grid.plan(axis, local, list(axis.variants), 1, overrides), (1.0, 0.5)):
        _finished_run(tmp_path / "grid" / run.variant / "seed_0", run.config, loss)
    gcsfs.GCSFileSystem().put(local, remote, recursive=True)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    reports = {}
    for directory in (local, remote):
        runs = grid.plan(axis, directory, list(axis.variants), 1, overrides)
        grid.check(runs)
        assert all(map(grid.is_finished, runs))
        reports[directory] = storage.Path(write_axis_report(axis, directory, runs, "cmd")).read_text()
    assert reports[remote] == reports[local].replace(local, remote) and "guidance_2" in reports[remote]
    local_rows, remote_rows = read_csv(f"{local}/results.csv"), read_csv(f"{remote}/results.csv")
    assert [row.pop("workdir") for row in remote_rows] == [f"{remote}/{v}/seed_0" for v in axis.variants]
    assert remote_rows == [{k: v for k, v in row.items() if k != "workdir"} for row in local_rows]
    assert remote_rows[1]["images_per_sec"] == 30.0 and remote_rows[1]["loss_t[0.0,0.3)"] == 0.5
    for name in ("curves.png", "samples.png"):
        assert storage.Path(f"{remote}/{name}").read_bytes() == (tmp_path / "grid" / name).read_bytes()
    elsewhere = grid.plan(axis, remote, ["guidance_4"], 2, {**overrides, "log.tensorboard_dir": "/tb"})
    assert [run.config.log.tensorboard_dir for run in elsewhere] == ["/tb/guidance_4/seed_0", "/tb/guidance_4/seed_1"]
    combined = storage.Path(write_combined_report([remote], f"{remote}/combined", "cmd")).read_text()
    assert f"[{axis.name}]({remote}/report.md)" in combined
    assert list((tmp_path / "cwd").iterdir()) == []  # nothing written to a local directory named after the URL


def test_sample_of_a_pipeline_in_a_bucket_says_to_mount_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "t2ijax.sample", "--prx=gs://my-bucket/prx", "--prompt=a cat"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        "error: --prx=gs://my-bucket/prx: a pipeline's weights are read from local files; mount the bucket with "
        "gcsfuse (launch/tpu_vm.sh mount --bucket=my-bucket mounts it at /mnt/my-bucket) and pass "
        "--prx=/mnt/my-bucket/prx")

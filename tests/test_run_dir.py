"""A run directory as the readers see it: config.json stores absolute paths, a refused resume leaves it as
it was, readers find the run's data from any working directory and build nothing, and `t2ijax.load_run`
and the export say what the run is."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import tiny_config
from t2ijax.errors import ConfigError
from t2ijax.metrics.evaluation import evaluate_checkpoint
from t2ijax.training.loop import Run, check_resumable
from t2ijax.training.restore import load_run_config

PROMPT = "A large red circle on the left, on a black background."


def _files(directory) -> set[str]:
    return {os.path.relpath(os.path.join(root, name), directory)
            for root, _, names in os.walk(directory) for name in names}


def _contents(workdir: str) -> dict[str, bytes]:
    """Every file of `workdir` but run.lock, which names each trainer that takes it."""
    return {name: open(os.path.join(workdir, name), "rb").read() for name in _files(workdir) if name != "run.lock"}


@pytest.fixture(scope="module")
def relative_run(data_dir, tmp_path_factory):
    """(workdir, params at step 0) of a run set up from the data directory's parent with data.data_dir relative,
    as `--config.data.data_dir=data` run from a repository checkout gives."""
    parent, name = os.path.split(data_dir)
    workdir = str(tmp_path_factory.mktemp("relative_run"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(parent)
        run = Run(tiny_config(name), workdir).setup()
    run.checkpointer.save(run.state, run.counters)
    run.checkpointer.close()
    return workdir, jax.device_get(run.state.sampling_params)


def test_config_json_stores_resolved_paths(relative_run, data_dir):
    with open(os.path.join(relative_run[0], "config.json")) as f:
        saved = json.load(f)
    assert saved["data"]["data_dir"] == data_dir


def test_refused_resume_leaves_config_json_and_names_every_differing_field(relative_run, data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(relative_run[0], workdir)
    before = _contents(workdir)
    config = tiny_config(data_dir)
    config.model.depth = 6
    config.optim.b1 = 0.8
    config.total_steps = 9  # may change on resume: not named
    with pytest.raises(ConfigError) as error:
        Run(config, workdir).setup()
    message = str(error.value)
    assert "model.depth: run has 2, you passed 6; optim.b1: run has 0.9, you passed 0.8)" in message
    assert "total_steps:" not in message and "strict" not in message and "\n" not in message
    assert _contents(workdir) == before and "config.json" in before


def test_resume_may_change_what_neither_restores_nor_trains(relative_run, data_dir, tmp_path):
    config = tiny_config(data_dir)
    config.total_steps = 9
    config.log.every_steps = 1
    config.eval.update(every_steps=3, metrics=("loss_t",))
    config.sampler.steps = 7
    config.nonfinite.policy = "skip"
    check_resumable(relative_run[0], config)
    config.seed = 1
    with pytest.raises(ConfigError, match=r"\(seed: run has 0, you passed 1\)"):
        check_resumable(relative_run[0], config)
    check_resumable(str(tmp_path), config)  # no checkpoints: nothing to resume


def test_readers_from_another_directory_read_the_runs_data_and_build_nothing(relative_run, data_dir, tmp_path,
                                                                             monkeypatch):
    workdir = relative_run[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data_before = _files(data_dir)
    metrics, _ = evaluate_checkpoint(workdir, metrics=["loss_t", "composition"], num_samples=4, sampler={"steps": 2})
    assert metrics["step"] == 0 and "composition/shape" in metrics
    out = tmp_path / "sample.png"
    subprocess.run([sys.executable, "-m", "t2ijax.sample", f"--workdir={workdir}", "--prompt", PROMPT, f"--out={out}",
                    "--steps=2"], cwd=elsewhere, check=True, timeout=300)
    assert out.exists()
    assert _files(elsewhere) == set() and _files(data_dir) == data_before


def test_reader_that_cannot_find_the_runs_data_says_where_it_looked(relative_run, data_dir, tmp_path, monkeypatch):
    """A run whose config.json names a relative data_dir, read from a directory where it is not."""
    workdir = tmp_path / "old_run"
    shutil.copytree(relative_run[0], workdir)
    saved = json.loads((workdir / "config.json").read_text())
    saved["data"]["data_dir"] = os.path.basename(data_dir)
    (workdir / "config.json").write_text(json.dumps(saved))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ConfigError, match=f"^no records at {elsewhere / os.path.basename(data_dir)}/records/"
                                          r"[0-9a-f]+ \(no manifest.json\); write them with `python -m "
                                          "t2ijax.preprocess") as error:
        evaluate_checkpoint(str(workdir), metrics=["loss_t"])
    assert "\n" not in str(error.value) and _files(elsewhere) == set()


def test_load_run_gives_the_config_model_and_params(relative_run):
    import t2ijax

    run = t2ijax.load_run(relative_run[0])
    assert run.step == 0 and run.config.model.depth == 2 and run.config.to_dict() == \
        load_run_config(relative_run[0]).to_dict()
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.params), relative_run[1])
    x = np.zeros((1, *run.image_shape), np.float32)
    text = np.zeros((1, run.config.text_encoder.max_length, 384), np.float32)
    out = run.model.apply({"params": run.params}, x, np.ones(1, np.float32), text, np.ones(text.shape[:2], bool))
    assert out.shape == x.shape
    with pytest.raises(ConfigError, match="no checkpoint for step 5 under .*; its steps are 0"):
        t2ijax.load_run(relative_run[0], step=5)
    light = subprocess.run([sys.executable, "-c", "import sys, t2ijax; t2ijax.load_run; print('jax' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"


def test_export_names_the_text_encoder_and_layer_it_expects(relative_run, tmp_path):
    from t2ijax.interop.run_export import export_run

    step, _ = export_run(relative_run[0], str(tmp_path / "out"))
    card = (tmp_path / "out" / "README.md").read_text()
    assert step == 0 and "hidden states after layer 4 (layer 4) of the text encoder `all-MiniLM-L6-v2`" in card
    expects = json.loads(card.split("```json\n")[1].split("```")[0])
    assert expects["text_encoder"]["name"] == "all-MiniLM-L6-v2" and expects["text_encoder"]["layer"] == 4
    assert expects["text_encoder"]["max_length"] == 16 and expects["autoencoder"] == "identity"


def test_a_run_without_complete_checkpoints_is_not_a_resume(data_dir, tmp_path):
    """What another process may see while process 0 sets up: its write probe or a save in progress in
    checkpoints/, and no config.json yet."""
    (tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".write-test-1234").write_text("ok")
    check_resumable(str(tmp_path), tiny_config(data_dir))  # nothing to compare with: no error
    (tmp_path / "checkpoints" / "2").mkdir()
    with pytest.raises(ConfigError, match="config.json not found"):
        check_resumable(str(tmp_path), tiny_config(data_dir))

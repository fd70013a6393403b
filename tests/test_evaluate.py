"""The evaluation CLI: same seed same metrics, prompt files, and metrics that cannot run."""
import json
import shutil

import numpy as np
import pytest
from absl import flags

from conftest import tiny_config
from t2ijax import evaluate
from t2ijax.config import validate
from t2ijax.errors import ConfigError
from t2ijax.metrics.evaluation import evaluate_checkpoint
from t2ijax.metrics.prompts import read_prompts

FAST = dict(num_samples=6, sampler={"steps": 2})
PROMPT = "A large red circle on the left, on a black background."
OBJECT = {"shape": "circle", "colour": "red", "size": "large", "position": "left"}


@pytest.fixture(scope="module")
def workdir(run_workdir):
    return run_workdir



def test_same_seed_gives_the_same_metrics(workdir, tiny_clip_dir):
    metrics = ["loss_t", "composition", "cmmd"]
    first, path = evaluate_checkpoint(workdir, metrics=metrics, clip_weights=tiny_clip_dir, **FAST)
    second, _ = evaluate_checkpoint(workdir, metrics=metrics, clip_weights=tiny_clip_dir, **FAST)
    assert first == second
    assert {"loss_t[0.0,0.3)", "loss_t[0.6,1.0)", "composition/colour", "cmmd"} <= set(first)
    assert first["cmmd"] > 0 and "skipped" not in first and first["step"] == 0
    with open(path) as f:
        assert json.load(f) == first
    other_seed, _ = evaluate_checkpoint(workdir, seed=1, metrics=metrics, clip_weights=tiny_clip_dir, **FAST)
    assert other_seed["loss_t[0.3,0.6)"] != first["loss_t[0.3,0.6)"] and other_seed["cmmd"] != first["cmmd"]


def test_metrics_that_cannot_run_are_skipped_with_a_reason(workdir, tiny_clip_dir):
    metrics, _ = evaluate_checkpoint(workdir, metrics=["loss_t", "composition", "fid", "fd_random_inception", "cmmd"],
                                     clip_weights=tiny_clip_dir, reference_examples=1, **FAST)
    assert metrics["skipped"]["fid"] == ("needs the FID Inception-v3 weights (.safetensors): set "
                                         "config.eval.inception_weights (see docs/evaluation.md)")
    assert metrics["skipped"]["fd_random_inception"] == ("a covariance needs at least 2 reference images, got 1; "
                                                         "raise eval.reference_examples")
    assert all("\n" not in reason for reason in metrics["skipped"].values())
    assert {"loss_t[0.0,0.3)", "composition/shape", "cmmd"} <= set(metrics)


def test_prompt_file_scores_composition_only_with_objects(workdir, tmp_path):
    with_objects = tmp_path / "with.jsonl"
    lines = FAST["num_samples"]  # as many prompts as the other tests generate: nothing new to compile
    with_objects.write_text("\n".join(json.dumps({"prompt": PROMPT, "objects": [OBJECT]}) for _ in range(lines)))
    metrics, _ = evaluate_checkpoint(workdir, prompts_file=str(with_objects), metrics=["composition"],
                                     sampler={"steps": 2})
    assert "composition/colour" in metrics and metrics["settings"]["num_samples"] == lines
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join(json.dumps({"prompt": PROMPT}) for _ in range(lines)))
    metrics, _ = evaluate_checkpoint(workdir, prompts_file=str(bare), metrics=["composition"],
                                     sampler={"steps": 2})
    assert "composition/colour" not in metrics and "no scene attributes" in metrics["skipped"]["composition"]


@pytest.mark.parametrize("content, message", [
    (f'{{"prompt": "{PROMPT}"}}\n\n{{"prompt": "{PROMPT}"}}\n', r"prompts\.jsonl:2: empty line"),
    (f'{{"prompt": "{PROMPT}", "negative": "blurry"}}\n', r"prompts\.jsonl:1: unknown field 'negative'"),
    (f'{{"prompt": "{PROMPT}", "objects": [{{"shape": "star"}}]}}\n', r":1: object shape 'star' is not one of"),
    (f'{{"prompt": "{PROMPT}", "objects": [{{"shape": "circle", "hue": 3}}]}}\n', r":1: unknown field 'hue'"),
    ("a plain line\n", r":1: not JSON"),
])
def test_bad_prompt_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        read_prompts(str(path))
    assert "\n" not in str(error.value)


def test_prompt_file_attributes_use_the_dataset_layout(tmp_path):
    path = tmp_path / "prompts.jsonl"
    second = {"shape": "square", "colour": "blue", "size": "small", "position": "right"}
    path.write_text(json.dumps({"prompt": PROMPT, "objects": [OBJECT, second]}) + "\n"
                    + json.dumps({"prompt": PROMPT, "objects": [OBJECT]}) + "\n")
    prompts, attributes = read_prompts(str(path))
    assert prompts == [PROMPT, PROMPT]
    np.testing.assert_array_equal(attributes["num_objects"], [2, 1])
    np.testing.assert_array_equal(attributes["shape"], [[0, 1], [0, -1]])
    np.testing.assert_array_equal(attributes["position"], [[0, 1], [0, -1]])


def test_cli_reports_bad_input_in_one_line(workdir, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(f'{{"prompt": "{PROMPT}"}}\n\n')
    flags.FLAGS(["evaluate", f"--workdir={workdir}", f"--prompts={path}"])
    try:
        with pytest.raises(SystemExit) as exit:  # absl prints the message and exits with status 1
            evaluate.main(["evaluate"])
    finally:
        flags.FLAGS.unparse_flags()
    assert str(exit.value) == f'error: {path}:2: empty line; write one JSON object per line, e.g. {{"prompt": "..."}}'
    with pytest.raises(ConfigError, match=r"no checkpoint for step 5 under .*; its steps are 0"):
        evaluate_checkpoint(workdir, step=5)


def test_evaluates_at_other_sizes_under_their_prefix(workdir, tmp_path):
    """A size the run's records lack is added to them (preprocessed), then scored under its prefix."""
    from t2ijax.data import manifest
    from t2ijax.training.restore import load_run_config

    config = load_run_config(workdir)
    records, run = str(tmp_path / "records"), tmp_path / "run"
    shutil.copytree(manifest.records_dir(config), records)  # the session's records stay as the other tests see them
    shutil.copytree(workdir, run)
    saved = json.loads((run / "config.json").read_text())
    saved["data"]["records"] = records
    (run / "config.json").write_text(json.dumps(saved))
    at_sizes, _ = evaluate_checkpoint(str(run), metrics=["loss_t", "composition"], sizes=((32, 64),), **FAST)
    alone, _ = evaluate_checkpoint(workdir, metrics=["loss_t", "composition"], **FAST)
    assert {k: v for k, v in at_sizes.items() if not k.startswith("32x64/") and k != "settings"} == \
        {k: v for k, v in alone.items() if k != "settings"}
    assert {"32x64/loss_t[0.0,0.3)", "32x64/composition/shape"} <= set(at_sizes)
    assert at_sizes["32x64/loss_t[0.0,0.3)"] != at_sizes["loss_t[0.0,0.3)"]
    assert "validation/32/32x64" in manifest.read(records)["sets"]
    flags.FLAGS(["evaluate", f"--workdir={workdir}", "--sizes=32x6a"])
    try:
        with pytest.raises(SystemExit) as exit:
            evaluate.main(["evaluate"])
    finally:
        flags.FLAGS.unparse_flags()
    assert str(exit.value) == "error: --sizes=32x6a: give HEIGHTxWIDTH pixel sizes, e.g. 64x64,32x64"
    with pytest.raises(ConfigError, match=r"config.eval.sizes entry \(32, 30\) must be \(height, width\) in pixels"):
        evaluate_checkpoint(workdir, sizes=((32, 30),))


def test_unknown_metric_is_rejected_before_compute(data_dir):
    config = tiny_config(data_dir)
    config.eval.metrics = ("loss_t", "fdi")
    with pytest.raises(ConfigError, match=r"config\.eval\.metrics names 'fdi'; metrics are: loss_t, composition, fid"):
        validate(config, 1)

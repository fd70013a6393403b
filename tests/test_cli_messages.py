"""The command lines' mistakes and doubtful settings are one line each, saying what is wrong and what to do
(the level of the typo message, `did you mean config.model.depth?`, of tests/test_config.py)."""
import logging
import os
import re
import subprocess
import sys

import pytest

from conftest import error_line, tiny_config
from t2ijax.config import warn_unreached_warmup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _error_line(module: str, *args: str) -> str:
    """The one 'error: ' line of a command that failed before any work, with no traceback."""
    return error_line(subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                                     timeout=120))


def test_missing_config_file_lists_the_configs_and_suggests_the_nearest(tmp_path):
    line = _error_line("t2ijax.main", "--config=configs/shapes_tin.py", f"--workdir={tmp_path}")
    assert line.startswith("error: config file configs/shapes_tin.py does not exist; did you mean "
                           "configs/shapes_tiny.py? the configs: configs/arch_part1.py, configs/base.py, ")
    assert "configs/prx_small.py" in line and "configs/ablations/: architecture.py, augmentation.py, " in line
    assert "did you mean configs/ablations/path.py?" in _error_line(
        "t2ijax.main", "--config=configs/ablations/pth.py:rectified_flow", f"--workdir={tmp_path}")


def test_missing_config_flag_says_what_to_give(tmp_path):
    line = _error_line("t2ijax.main", f"--workdir={tmp_path}")
    assert line.startswith("error: --config is missing: give a config file, e.g. --config=configs/shapes_tiny.py; "
                           "the configs: configs/arch_part1.py, configs/base.py, ")


@pytest.mark.parametrize("override, message", [
    ("--config.total_steps=abc", "--config.total_steps=abc: config.total_steps takes an integer, e.g. 10000"),
    ("--config.optim.learning_rate=fast", "config.optim.learning_rate takes a number, e.g. 0.0001"),
    ("--config.model.scan_layers=maybe", "config.model.scan_layers takes true or false, e.g. true"),
])
def test_override_of_the_wrong_type_names_the_type_with_an_example(tmp_path, override, message):
    line = _error_line("t2ijax.main", "--config=configs/shapes_tiny.py", f"--workdir={tmp_path}", override)
    assert message in line


def test_missing_workdir_says_what_it_is():
    line = _error_line("t2ijax.main", "--config=configs/shapes_tiny.py")
    assert line.startswith("error: --workdir is missing: the run's directory, where its checkpoints")
    assert "e.g. --workdir=workdirs/shapes_tiny" in line


@pytest.mark.parametrize("flag, message", [
    ("--num_per_prompt=0", "error: --num_per_prompt=0: images per prompt: give at least 1 (the default)"),
    ("--upscale=0", "error: --upscale=0: a whole-number enlargement: give at least 1"),
])
def test_sample_flags_out_of_range_are_one_line(tmp_path, flag, message):
    assert _error_line("t2ijax.sample", f"--workdir={tmp_path}", "--prompt=a red circle", flag) == message


def test_sample_without_a_prompt_says_what_is_missing(tmp_path):
    assert _error_line("t2ijax.sample", f"--workdir={tmp_path}") == \
        "error: --prompt is missing: Prompt; repeat the flag for several."


def test_a_run_that_never_leaves_warmup_is_warned(caplog):
    config = tiny_config("unused")
    config.update(total_steps=24)
    config.optim.warmup_steps = 200
    with caplog.at_level(logging.WARNING):
        warn_unreached_warmup(config)
    assert ("config.total_steps=24 <= config.optim.warmup_steps=200: the run never leaves warmup, its learning rate "
            "never reaches config.optim.learning_rate; lower the warmup too, e.g. --config.optim.warmup_steps=2"
            in caplog.text)
    caplog.clear()
    config.update(total_steps=201)
    with caplog.at_level(logging.WARNING):
        warn_unreached_warmup(config)
    assert caplog.text == ""


def test_captions_and_prompts_longer_than_max_length_are_counted(tmp_path, caplog):
    """Preprocessing says how many captions lose tokens and stores only those the model sees; a prompt too."""
    from t2ijax.data.pipeline import read_set
    from t2ijax.data.write_records import write
    from t2ijax.models.text import text_encoder_from_config
    from t2ijax.models.text.encoder import warn_truncated

    config = tiny_config(str(tmp_path / "data"))
    config.data.update(num_train=16, num_validation=8)
    config.text_encoder.max_length = 8  # shorter than the shapes captions
    with caplog.at_level(logging.WARNING):
        directory, found = write(config)
    counts = re.findall(r"(\d+) of (\d+) captions encoded here have more than config.text_encoder.max_length=8 "
                        r"tokens: they are truncated", caplog.text)
    assert counts and all(0 < int(n) <= int(m) for n, m in counts), caplog.text
    assert max(r["text_lengths"].max() for r in read_set(directory, found, "train/32/32x32")) == 8
    caplog.clear()
    long = " ".join(["red"] * 30)  # 30 word tokens and [CLS] ... [SEP]: 32 tokens
    encoder = text_encoder_from_config(tiny_config("unused").text_encoder)  # all-MiniLM-L6-v2, max_length 16
    with caplog.at_level(logging.INFO):
        warn_truncated(encoder, ["a red circle"], "prompts")
    assert caplog.text == ""
    with caplog.at_level(logging.INFO):
        warn_truncated(encoder, [long], "prompts")
    assert "1 of 1 prompts have more than config.text_encoder.max_length=16 tokens (the longest 32)" in caplog.text

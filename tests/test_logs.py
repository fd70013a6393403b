"""What the commands print: t2ijax's own lines, a line per setup phase, each line once, no other library's
logs or progress bars; and sample grids that say what they show."""
import collections
import glob
import io
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ (\S+?):\d+\] ")  # absl's "I1207 00:29:06.455 123 file.py:93] "
CONFIG = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import tiny_config

    def get_config():
        c = tiny_config({data_dir!r})
        c.sample.update(every_steps=3, prompts={prompts!r})
        return c
""")
PROMPTS = ("A large red circle on the left, on a black background.", "Two small green triangles, logged once.")


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """A tiny training run from the command line that builds its dataset and writes its records: (its output,
    its workdir)."""
    root = tmp_path_factory.mktemp("logged_run")
    fresh_data = root / "data"
    (root / "config.py").write_text(CONFIG.format(tests=os.path.join(REPO, "tests"), data_dir=str(fresh_data),
                                                     prompts=PROMPTS))
    proc = subprocess.run([sys.executable, "-m", "t2ijax.main", f"--config={root / 'config.py'}",
                           f"--workdir={root / 'workdir'}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr, root / "workdir"


def _messages(output: str) -> list[str]:
    """Every printed line without absl's prefix (time, thread, file)."""
    return [ABSL_PREFIX.sub("", line) for line in output.splitlines()]


def test_training_prints_each_line_once_and_no_progress_bar(training):
    output, _ = training
    twice = [line for line, n in collections.Counter(_messages(output)).items() if n > 1]
    assert not twice, output
    assert "\r" not in output and "%|" not in output and "examples/s]" not in output, output


def test_training_prints_only_its_own_lines(training):
    output, _ = training
    files = {m.group(1) for m in map(ABSL_PREFIX.match, output.splitlines()) if m}
    own = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "t2ijax", "**", "*.py"), recursive=True)}
    assert files <= own, files - own  # no orbax, TFDS, clu or jax log line
    for noise in ("oneDNN", "absl::InitializeLog", "Downloading and preparing", "grad_norm=", "eval/"):
        assert noise not in output, noise


def test_training_says_each_setup_phase_and_the_first_step(training):
    messages = _messages(training[0])
    config = tiny_config("unused")
    phases = [r"data: shapes at 32 px ", r"records train/32/32x32: 256 examples, 1 shards written here",
              r"records: \S+/records/[0-9a-f]+ \(train/32/32x32 256\)",
              r"train step for batches of \(8, 32, 32, 3\) compiled in [\d.]+ s",
              r"1 train step shape\(s\) compiled in [\d.]+ s: 8x32x32x3 [\d.]+ s",
              r"step 1 done \(loss [\d.]+\), \d+ s after setup began; then a line every 3 steps",
              r"step 3/6  loss",
              rf"evaluating step 6 at 32px: loss_t, composition on {config.eval.num_samples} prompts"]
    at = [next((i for i, m in enumerate(messages) if re.match(phase, m)), None) for phase in phases]
    assert None not in at and at == sorted(at), (phases, at, messages)


def _caption_rows(grid: np.ndarray, tile: int) -> np.ndarray:
    """Rows of the grid's first row of tiles below the tiles (2-pixel gap, then the tile)."""
    return grid[2 + tile:2 + tile + 30]


def test_sample_grids_show_their_prompts_large_enough(training):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    _, workdir = training
    prompts = list(PROMPTS)
    assert (workdir / "samples" / "prompts.txt").read_text().splitlines() == prompts
    grids = {}
    for path in glob.glob(str(workdir / "tensorboard" / "events.out.tfevents.*")):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.tag == "samples":  # a string tensor: width, height, PNG
                    grids[event.step] = np.asarray(Image.open(io.BytesIO(tensor_util.make_ndarray(value.tensor)[2])))
    assert sorted(grids) == [3, 6]
    for step, tensorboard_grid in grids.items():
        saved = np.asarray(Image.open(workdir / "samples" / f"step_{step:07d}.png"))
        np.testing.assert_array_equal(tensorboard_grid, saved)
    grid = grids[6]
    tile = 128  # 32 px images, enlarged 4 times
    assert grid.shape[1] == 2 + len(prompts) * (tile + 2)
    assert grid.shape[0] > 2 + tile + 2 + 2 * 11  # at least two lines of caption under the tiles
    under = _caption_rows(grid, tile)
    for column in range(len(prompts)):  # dark text on the white band under each tile
        band = under[:, 2 + column * (tile + 2):2 + column * (tile + 2) + tile]
        assert (band < 100).all(axis=-1).sum() > 50, column
    # different prompts, different writing
    first, second = (under[:, 2 + c * (tile + 2):2 + c * (tile + 2) + tile] for c in range(2))
    assert not np.array_equal(first, second)


def test_sample_prints_at_most_five_lines_for_one_prompt(run_workdir, tmp_path):
    out = tmp_path / "grid.png"
    long = "A large red circle on the left, on a black background, next to a small green triangle at the top."
    proc = subprocess.run([sys.executable, "-m", "t2ijax.sample", f"--workdir={run_workdir}", f"--prompt={long}",
                           "--num_per_prompt=2", f"--out={out}", "--steps=2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) <= 5, lines
    assert f"wrote {out} (2 image(s), step 0)" in lines, lines
    assert any(re.search(r"1 of 1 prompts have more than config.text_encoder.max_length=16 tokens \(the longest "
                         r"\d+\): they are truncated", line) for line in lines), lines
    grid = np.asarray(Image.open(out))
    assert grid.shape[1] == 2 + 2 * (128 + 2) and grid.shape[0] > 2 + 128 + 2 + 2 * 11
    assert (_caption_rows(grid, 128) < 100).all(axis=-1).sum() > 100  # the prompt is written under the images


def test_verbosity_1_brings_the_library_lines_back(run_workdir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "t2ijax.sample", f"--workdir={run_workdir}", "--prompt=a red circle",
                           f"--out={tmp_path / 'one.png'}", "--steps=2", "--verbosity=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = {m.group(1) for m in map(ABSL_PREFIX.match, proc.stderr.splitlines()) if m}
    assert "checkpoint_manager.py" in files, files  # orbax's own log of the restore

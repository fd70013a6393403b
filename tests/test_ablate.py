"""Ablation grids: every shipped axis expands and validates, bad input fails before anything runs, an
interrupted grid reruns only what is missing, and reports match the runs' own JSON."""
import csv
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from t2ijax.ablation import grid, summary
from t2ijax.ablation.report import write_combined_report
from t2ijax.ablation.results import read_csv, write_csv
from t2ijax.config import flatten
from t2ijax.errors import ConfigError
from t2ijax.training.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_AXIS = os.path.join(REPO, "tests", "tiny_axis.py")
SHIPPED_AXES = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "ablations", "*.py"))
                      if not p.endswith("__init__.py"))


def _as_json(value):
    return json.loads(json.dumps(value))


def _stand_in_autoencoders(directory, axis: grid.Axis) -> None:
    """The autoencoders the axis's variants train in or learn from (configs/shapes_autoencoder.py's: 4 channels,
    4x downsampling) as validation sees them (their config.json), where the variants expect them relative to the
    working directory."""
    from diffusers import AutoencoderKL

    levels = 3
    for fields in axis.variants.values():
        for path in (fields.get("autoencoder.name"), fields.get("teacher.path")):
            if path and not str(path).startswith(("identity", "/")):
                AutoencoderKL(block_out_channels=(8,) * levels, down_block_types=("DownEncoderBlock2D",) * levels,
                              up_block_types=("UpDecoderBlock2D",) * levels, norm_num_groups=4,
                              latent_channels=4).save_config(os.path.join(directory, path))


@pytest.mark.parametrize("path", SHIPPED_AXES, ids=lambda p: os.path.basename(p)[:-3])
def test_every_shipped_axis_expands_into_valid_runs(path, tmp_path, monkeypatch):
    axis = grid.load_axis(path)
    _stand_in_autoencoders(tmp_path / "cwd", axis)
    os.makedirs(tmp_path / "cwd", exist_ok=True)
    monkeypatch.chdir(tmp_path / "cwd")
    # --config=<axis>.py alone (how t2ijax.ablate reads its --config.* overrides) is the baseline.
    assert axis.get_config().to_dict() == axis.get_config(axis.baseline).to_dict()
    names = list(axis.variants)
    assert grid.select_variants(axis, None) == names
    assert grid.select_variants(axis, names[-1:]) == [axis.baseline] + names[1:][-1:]
    runs = grid.plan(axis, str(tmp_path), names, seeds=2, overrides={})
    assert [(r.variant, r.seed) for r in runs] == [(v, k) for v in names for k in (0, 1)]
    assert all(r.workdir == str(tmp_path / r.variant / f"seed_{r.seed}") and r.config.seed == r.seed for r in runs)
    grid.check(runs, num_devices=1)
    baseline = runs[0]
    baseline_values = {k: _as_json(v) for k, v in flatten(baseline.config.to_dict()).items()}
    for run in runs:
        # What a run changes is exactly its variant's overrides that differ from the baseline's values.
        overrides = {k: _as_json(v) for k, v in axis.variants[run.variant].items()}
        wanted = {k: v for k, v in overrides.items() if v != baseline_values.get(k)}
        assert grid.overrides_of(run, baseline) == wanted, run.label
        assert run.variant == axis.baseline or wanted, f"{run.variant} is the baseline again"


def _write_axis(directory, variants: dict) -> str:
    path = os.path.join(directory, "axis.py")
    with open(path, "w") as f:
        f.write(f"from configs.ablations import variant_config\nVARIANTS = {variants!r}\n"
                "def get_config(variant='base'):\n    return variant_config(VARIANTS, variant)\n")
    return path


def _files(directory) -> dict[str, float]:
    return {p: os.path.getmtime(p) for p in glob.glob(os.path.join(directory, "**"), recursive=True)}


def test_bad_input_is_rejected_before_anything_runs(tmp_path):
    axis = grid.load_axis(_write_axis(tmp_path, {"base": {}, "fast": {"total_steps": 10},
                                                 "typo": {"diffusion.pathh": "vp_cosine"},
                                                 "no_section": {"diffusionx.path": "vp_cosine"},
                                                 "other_prompts": {"sample.prompts": ("A red circle.",)}}))
    with pytest.raises(ConfigError, match="no variant 'slow'; its variants are: base, fast, typo"):
        grid.select_variants(axis, ["fast", "slow"])
    with pytest.raises(ConfigError, match="variant 'typo'.*config.diffusion.pathh is not a config field; "
                                          "did you mean config.diffusion.path"):
        grid.check(grid.plan(axis, str(tmp_path), ["base", "typo"], 1, {}), num_devices=1)
    with pytest.raises(ConfigError, match="variant 'no_section'.*diffusionx"):
        grid.plan(axis, str(tmp_path), ["base", "no_section"], 1, {})
    with pytest.raises(ConfigError, match="variant 'other_prompts' changes config.sample.prompts"):
        grid.check(grid.plan(axis, str(tmp_path), ["base", "other_prompts"], 1, {}))
    with pytest.raises(ConfigError, match="--seeds=0 must be at least 1"):
        grid.plan(axis, str(tmp_path), ["base"], 0, {})

    # A workdir holding a run of another baseline: found from its config.json, and nothing is touched.
    other = grid.plan(axis, str(tmp_path / "grid"), ["base", "fast"], 1, {"model.depth": 2})
    stored = other[1].workdir
    os.makedirs(stored)
    with open(os.path.join(stored, "config.json"), "w") as f:
        f.write(other[1].config.to_json_best_effort())
    before = _files(tmp_path / "grid")
    runs = grid.plan(axis, str(tmp_path / "grid"), ["base", "fast"], 1, {})
    with pytest.raises(ConfigError, match=r"fast/seed_0 holds a run of another config \(config.model.depth is 2 "
                                          r"there, 4 here\); pass the --baseline and --config overrides"):
        grid.check(runs, num_devices=1)
    assert _files(tmp_path / "grid") == before


def test_an_axis_runs_over_another_baseline():
    from configs import compose_tiny

    path = os.path.join(REPO, "configs", "ablations", "path.py")
    compose = flatten(_as_json(compose_tiny.get_config().to_dict()))
    axis = grid.load_axis(path, baseline="compose_tiny")
    assert flatten(_as_json(axis.get_config("rectified_flow").to_dict())) == compose
    changed = grid.differences(flatten(_as_json(axis.get_config("vp_cosine").to_dict())), compose)
    assert changed == {"diffusion.path": "vp_cosine"}
    runs = grid.plan(axis, "/nonexistent", ["rectified_flow", "vp_cosine"], 1, {"total_steps": 7})
    assert [(r.config.data.name, r.config.diffusion.path, r.config.total_steps) for r in runs] == [
        ("compose", "rectified_flow", 7), ("compose", "vp_cosine", 7)]
    # The same configs by hand, as `t2ijax.main --config=configs/ablations/path.py:vp_cosine@compose_tiny` reads it;
    # an empty variant is the baseline.
    direct = grid.load_axis(path)
    assert direct.get_config("vp_cosine@compose_tiny").to_dict() == runs[1].config.to_dict() | {
        "total_steps": compose_tiny.get_config().total_steps}
    assert direct.get_config("@compose_tiny").to_dict() == compose_tiny.get_config().to_dict()
    for baseline, message in [("compose_huge", "there is no configs/compose_huge.py to use as the baseline"),
                              ("ablations.path", "is not a config module name"),
                              ("ablations", r"configs.ablations is not a baseline config \(no get_config")]:
        with pytest.raises(ConfigError, match=message):
            grid.load_axis(path, baseline).get_config("vp_cosine")
    with pytest.raises(ConfigError, match="unknown variant 'vp'; the variants are: rectified_flow, vp_cosine"):
        direct.get_config("vp@compose_tiny")


HOLD_LOCK = """
import fcntl, os, sys
os.makedirs(sys.argv[1], exist_ok=True)
fd = os.open(os.path.join(sys.argv[1], "run.lock"), os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)  # what t2ijax/training/workdir_lock.py takes, without importing JAX
print("held", flush=True)
sys.stdin.read()  # until the test closes it
"""


def test_copies_of_one_grid_command_share_its_runs(tmp_path, monkeypatch):
    """A run another trainer holds is left to it and waited for; the others train meanwhile."""
    from t2ijax.training import loop
    from t2ijax.training.workdir_lock import WorkdirLock

    axis = grid.load_axis(TINY_AXIS)
    runs = grid.plan(axis, str(tmp_path), list(axis.variants), 2, {})
    trained = []

    def train(config, workdir):  # the real lock around a stand-in for training
        lock = WorkdirLock(workdir).acquire()
        trained.append(workdir)
        with open(os.path.join(workdir, "eval.json"), "w") as f:
            json.dump({"step": config.total_steps}, f)
        lock.release()

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, runs[1].workdir], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline() == "held\n"
        waits = []

        def wait(seconds):  # the other trainer finishes its run while this one waits
            waits.append(seconds)
            with open(os.path.join(runs[1].workdir, "eval.json"), "w") as f:
                json.dump({"step": runs[1].config.total_steps}, f)
            holder.stdin.close()
            holder.wait(timeout=60)

        monkeypatch.setattr(loop, "train_and_evaluate", train)
        monkeypatch.setattr(grid, "time", types.SimpleNamespace(sleep=wait))
        grid.run_missing(runs, poll_s=7)
    finally:
        holder.kill()
    assert trained == [r.workdir for r in runs if r is not runs[1]]
    assert waits == [7] and all(grid.is_finished(r) for r in runs)

    # A holder that dies without finishing frees the run, and the waiting command trains it itself.
    os.remove(os.path.join(runs[3].workdir, "eval.json"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, runs[3].workdir], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline() == "held\n"
    monkeypatch.setattr(grid, "time", types.SimpleNamespace(sleep=lambda seconds: (holder.kill(), holder.wait(60))))
    trained.clear()
    grid.run_missing(runs)
    assert trained == [runs[3].workdir] and grid.is_finished(runs[3])


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def finished_grid(data_dir, tmp_path_factory):
    """The tiny axis's grid, its second run killed right after its first checkpoint, then rerun.
    Returns (directory, runs, files of the first run before the rerun, checkpoints saved by the rerun)."""
    directory = str(tmp_path_factory.mktemp("grid"))
    axis = grid.load_axis(TINY_AXIS)
    runs = grid.plan(axis, directory, list(axis.variants), 1, {"data.data_dir": data_dir})
    grid.check(runs, num_devices=1)

    save = Checkpointer.save
    saved = []

    def save_then_die(self, state, counters):
        save(self, state, counters)
        saved.append((self.directory, int(state.step)))
        if runs[1].workdir in self.directory and int(state.step) == 2:
            raise Killed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpointer, "save", save_then_die)
        with pytest.raises(Killed):
            grid.run_missing(runs)
        assert [grid.is_finished(r) for r in runs] == [True, False]
        first_run = _files(runs[0].workdir)
        saved.clear()
        grid.run_missing(runs)
    return directory, runs, first_run, list(saved)


def test_a_killed_grid_reruns_only_what_is_missing(finished_grid):
    directory, runs, first_run, saved = finished_grid
    assert all(grid.is_finished(r) for r in runs)
    assert _files(runs[0].workdir) == first_run  # the finished run was not touched
    assert saved == [(os.path.join(runs[1].workdir, "checkpoints"), 4)]  # the killed one resumed at step 2
    events = sorted(glob.glob(os.path.join(runs[1].workdir, "tensorboard", "events.*")))
    assert len(events) == 2  # the killed process's log and the resumed one's


def test_report_matches_the_runs_json(finished_grid, data_dir):
    directory, runs, _, _ = finished_grid
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
    result = subprocess.run([sys.executable, "-m", "t2ijax.ablate", f"--config={TINY_AXIS}", f"--workdir={directory}",
                             f"--config.data.data_dir={data_dir}", "--report_only"], env=env, cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(os.path.join(directory, "results.csv"))
    assert [(r["variant"], r["seed"]) for r in rows] == [("guidance_4", 0), ("guidance_2", 0)]
    for run, row in zip(runs, rows):
        with open(os.path.join(run.workdir, "eval.json")) as f:
            final = json.load(f)
        assert {k: v for k, v in row.items() if k in final} == final  # bit for bit, step included
        assert row["images_per_sec"] > 0 and row["wall_time_s"] > 0
    with open(os.path.join(directory, "report.md")) as f:
        report = f.read()
    assert "| guidance_2 | `sampler.guidance=2.0` |" in report
    baseline, variant = rows
    assert "This is a single-seed report" in report
    loss = "loss_t[0.0,0.3)"
    assert f"{variant[loss]:.4g} ({variant[loss] - baseline[loss]:+.3g}, single seed)" in report
    # an accuracy of one run: the binomial interval over the eval's prompts (config.eval.num_samples)
    assert all(row["num_prompts"] == runs[0].config.eval.num_samples for row in rows)
    p, q = baseline["composition/colour"], variant["composition/colour"]
    half_width = 1.959964 * math.sqrt(q * (1 - q) / variant["num_prompts"])
    diff_half_width = 1.959964 * math.sqrt((p * (1 - p) + q * (1 - q)) / variant["num_prompts"])
    assert f"{q:.4g} ± {half_width:.2g} ({q - p:+.3g} ± {diff_half_width:.2g}, " in report
    for name in ("curves.png", "samples.png"):
        with Image.open(os.path.join(directory, name)) as image:
            assert min(image.size) > 200
        assert f"]({name})" in report


def test_report_reads_variant_directories_that_are_single_runs(finished_grid, data_dir, tmp_path):
    """The layout of `t2ijax.main --workdir=DIR/<variant>`: the variant directory is seed 0 itself."""
    directory, runs, _, _ = finished_grid
    for run in runs:
        shutil.copytree(run.workdir, tmp_path / run.variant)
    axis = grid.load_axis(TINY_AXIS)
    single = grid.plan(axis, str(tmp_path), list(axis.variants), 1, {"data.data_dir": data_dir})
    assert [r.workdir for r in single] == [str(tmp_path / r.variant) for r in runs]
    assert all(grid.is_finished(r) for r in single)
    grid.check(single)


def test_summary_is_mean_interval_and_difference_over_seeds():
    rows = [dict(axis="a", variant=v, seed=k, workdir="", step=1, **{"loss_t[0.0,0.3)": x, "composition/shape": y})
            for v, k, x, y in [("base", 0, 1.0, 0.2), ("base", 1, 2.0, 0.4),
                               ("lr", 0, 0.5, 0.9), ("lr", 1, 0.7, 0.5)]]
    base, lr = summary.summarize(rows)
    assert base.is_baseline and not lr.is_baseline and lr.seeds == [0, 1] and not base.difference
    loss = base.estimate["loss_t[0.0,0.3)"]
    assert loss.mean == 1.5 and math.isclose(loss.se, np.std([1, 2], ddof=1) / math.sqrt(2)) and loss.dof == 1
    assert math.isclose(lr.difference["loss_t[0.0,0.3)"].mean, 0.6 - 1.5)
    assert math.isclose(lr.difference["composition/shape"].mean, 0.4)
    # 2 seeds: t(0.975, 1 dof) = 12.7, far wider than these differences
    assert lr.verdict == {"loss_t[0.0,0.3)": "within noise", "composition/shape": "within noise"}
    assert summary.best([base, lr], "loss_t[0.0,0.3)") == (lr, False)  # the best mean, not beyond noise
    assert summary.best([base, base], "composition/shape") == (None, False)  # a tie has no winner


def test_combined_report_is_one_table_of_several_axes(tmp_path):
    rows = [dict(axis="path", variant=v, seed=0, workdir="", step=4, loss=x) for v, x in [("rf", 1.0), ("vp", 1.25)]]
    for name, axis_rows in {"path": rows, "prediction": [dict(r, axis="prediction") for r in rows]}.items():
        os.makedirs(tmp_path / name)
        write_csv(str(tmp_path / name / "results.csv"), axis_rows)
    path = write_combined_report([str(tmp_path / "path"), str(tmp_path / "prediction")], str(tmp_path / "all"), "cmd")
    with open(path) as f:
        report = f.read()
    assert "| path | vp | 1 | 1.25 (+0.25, single seed) |" in report and "| prediction | rf (baseline) | 1 | 1 |" in report
    with open(tmp_path / "all" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    with pytest.raises(ConfigError, match="axis 'path' is in both"):
        write_combined_report([str(tmp_path / "path")] * 2, str(tmp_path / "again"), "cmd")

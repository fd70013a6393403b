"""What a finished run measured, read from its directory alone: final metrics (eval.json), evaluations
and training loss over steps, images/s and wall time (TensorBoard events), its final sample grid; and
the CSV of one row per run."""
import csv
import dataclasses
import io
import json
import os
import re

import numpy as np

from t2ijax import storage

ID_COLUMNS = ("axis", "variant", "seed", "workdir", "step")
COST_COLUMNS = ("images_per_sec", "wall_time_s")
PROMPTS_COLUMN = "num_prompts"  # held-out prompts each accuracy is over (the binomial N); after the rest


@dataclasses.dataclass
class RunResults:
    step: int                            # of the final evaluation
    final: dict[str, float]              # eval.json's numbers
    images_per_sec: float                # median over the logged training intervals
    wall_time_s: float                   # summed over the training processes (a resumed run has several)
    loss: dict[int, float]               # training loss by step
    evals: dict[int, dict[str, float]]   # periodic evaluations (eval/step_*.json) by step
    samples: str                         # the sample grid PNG of the final step


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k != "step" and isinstance(v, (int, float))}


def _scalar_events(path: storage.Path):
    """(wall time, step, {tag: value}) for every event of one TensorBoard file."""
    from tensorboard.util import tensor_util

    from t2ijax.metrics.tensorboard_events import read_events

    for event in read_events(path):
        values = {}
        for value in event.summary.value:
            array = tensor_util.make_ndarray(value.tensor) if value.HasField("tensor") else None
            if array is not None and array.dtype.kind == "f" and array.size == 1:
                values[value.tag] = float(array)
        yield event.wall_time, event.step, values


def _training_log(tensorboard_dir: storage.Path) -> tuple[dict[int, float], list[float], float]:
    """(loss by step, images/s of each logged interval, wall time) of the training processes' event
    files (nan wall time when there are none). Each process writes its own file, opened at setup; its
    span runs to its last event (the final evaluation), so time between a kill and a resume is not counted."""
    loss, images_per_sec, spans = {}, [], []
    for path in _files(tensorboard_dir, r"events\.out\.tfevents\..*"):
        events = list(_scalar_events(path))
        if not any("loss" in values for _, _, values in events):
            continue  # written by t2ijax.evaluate, not by training
        spans.append(events[-1][0] - events[0][0])
        for _, step, values in events:
            if "loss" in values:
                loss[step] = values["loss"]
            if "images_per_sec" in values:
                images_per_sec.append(values["images_per_sec"])
    return loss, images_per_sec, float(sum(spans)) if spans else float("nan")


def _files(directory: storage.Path, pattern: str) -> list[storage.Path]:
    """The files of `directory` whose names match `pattern`, sorted; none when it does not exist."""
    return sorted(p for p in directory.iterdir() if re.fullmatch(pattern, p.name)) if directory.is_dir() else []


def read_run(workdir: str, tensorboard_dir: str | None = None) -> RunResults:
    """The results of the finished run in `workdir` whose events are in `tensorboard_dir` (default
    <workdir>/tensorboard), each a local directory or a gs:// URL."""
    directory = storage.Path(workdir)
    final = json.loads((directory / "eval.json").read_text())
    evals = {int(re.search(r"\d+", path.name).group()): _numbers(json.loads(path.read_text()))
             for path in _files(directory / "eval", r"step_\d+\.json")}
    loss, images_per_sec, wall_time = _training_log(storage.Path(tensorboard_dir or directory / "tensorboard"))
    median_images_per_sec = float(np.median(images_per_sec)) if images_per_sec else float("nan")
    return RunResults(final["step"], _numbers(final), median_images_per_sec, wall_time, loss, evals,
                      os.fspath(directory / "samples" / f"step_{final['step']:07d}.png"))


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    metrics = sorted({k for row in rows for k in row} - {*ID_COLUMNS, *COST_COLUMNS, PROMPTS_COLUMN})
    prompts = [PROMPTS_COLUMN] if any(PROMPTS_COLUMN in row for row in rows) else []
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=[*ID_COLUMNS, *metrics, *COST_COLUMNS, *prompts])
    writer.writeheader()
    writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    storage.Path(path).write_text(text.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows as `write_csv` wrote them: ids as strings (seed and step as ints), numbers as floats; a
    metric a run lacks is absent from its row, and so is num_prompts in a CSV written without it."""
    rows = list(csv.DictReader(io.StringIO(storage.Path(path).read_text(), newline="")))
    parsed = []
    for row in rows:
        out = {k: row[k] for k in ("axis", "variant", "workdir")}
        out.update(seed=int(row["seed"]), step=int(row["step"]))
        out.update({k: float(v) for k, v in row.items() if k not in (*ID_COLUMNS, PROMPTS_COLUMN) and v != ""})
        if row.get(PROMPTS_COLUMN):
            out[PROMPTS_COLUMN] = int(row[PROMPTS_COLUMN])
        parsed.append(out)
    return parsed

"""What a finished run measured, read from its directory alone: final metrics (eval.json), evaluations
and training loss over steps, images/s and wall time (TensorBoard events), its final sample grid; and
the CSV of one row per run."""
import csv
import dataclasses
import glob
import json
import os
import re

import numpy as np

ID_COLUMNS = ("axis", "variant", "seed", "workdir", "step")
COST_COLUMNS = ("images_per_sec", "wall_time_s")


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


def _scalar_events(path: str):
    """(wall time, step, {tag: value}) for every event of one TensorBoard file."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    for event in EventFileLoader(path).Load():
        values = {}
        for value in event.summary.value:
            array = tensor_util.make_ndarray(value.tensor) if value.HasField("tensor") else None
            if array is not None and array.dtype.kind == "f" and array.size == 1:
                values[value.tag] = float(array)
        yield event.wall_time, event.step, values


def _training_log(tensorboard_dir: str) -> tuple[dict[int, float], list[float], float]:
    """(loss by step, images/s of each logged interval, wall time) of the training processes' event
    files (nan wall time when there are none). Each process writes its own file, opened at setup; its
    span runs to its last event (the final evaluation), so time between a kill and a resume is not counted."""
    loss, images_per_sec, spans = {}, [], []
    for path in sorted(glob.glob(os.path.join(tensorboard_dir, "events.out.tfevents.*"))):
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


def read_run(workdir: str) -> RunResults:
    """The results of the finished run in `workdir`."""
    with open(os.path.join(workdir, "eval.json")) as f:
        final = json.load(f)
    evals = {}
    for path in glob.glob(os.path.join(workdir, "eval", "step_*.json")):
        with open(path) as f:
            evals[int(re.search(r"step_(\d+)\.json$", path).group(1))] = _numbers(json.load(f))
    loss, images_per_sec, wall_time = _training_log(os.path.join(workdir, "tensorboard"))
    median_images_per_sec = float(np.median(images_per_sec)) if images_per_sec else float("nan")
    return RunResults(final["step"], _numbers(final), median_images_per_sec, wall_time, loss, evals,
                      os.path.join(workdir, "samples", f"step_{final['step']:07d}.png"))


def write_csv(path: str, rows: list[dict]) -> None:
    metrics = sorted({k for row in rows for k in row} - set(ID_COLUMNS) - set(COST_COLUMNS))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*ID_COLUMNS, *metrics, *COST_COLUMNS])
        writer.writeheader()
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)


def read_csv(path: str) -> list[dict]:
    """Rows as `write_csv` wrote them: ids as strings (seed and step as ints), numbers as floats; a
    metric a run lacks is absent from its row."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    parsed = []
    for row in rows:
        out = {k: row[k] for k in ("axis", "variant", "workdir")}
        out.update(seed=int(row["seed"]), step=int(row["step"]))
        out.update({k: float(v) for k, v in row.items() if k not in ID_COLUMNS and v != ""})
        parsed.append(out)
    return parsed

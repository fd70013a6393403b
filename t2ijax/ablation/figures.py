"""The report's figures: training loss and evaluated metrics over steps, and the variants' final
sample grids side by side."""
import io
import math
import os

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from t2ijax import storage
from t2ijax.ablation.results import RunResults

PANEL_INCHES = 3.2


def _save(figure: Figure, path: str) -> None:
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    storage.Path(path).write_bytes(png.getvalue())


def _seed_curves(curves: list[dict[int, float]]) -> tuple[list[int], np.ndarray]:
    """(steps, values [seeds, steps]) at every step that each seed logged."""
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return steps, np.array([[c[s] for s in steps] for c in curves]).reshape(len(curves), len(steps))


def curves(path: str | os.PathLike, variants: dict[str, list[RunResults]]) -> None:
    """One panel for the training loss and one per evaluated metric; a line per variant, the mean over
    seeds, in a band (error bars where it has one or two points) from the seeds' lowest to highest
    value when there are several."""
    metrics = sorted({m for runs in variants.values() for r in runs for e in r.evals.values() for m in e})
    panels = ["loss"] + metrics
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    figure = Figure(figsize=(PANEL_INCHES * 1.3 * cols, PANEL_INCHES * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for variant, runs in variants.items():
            if panel == "loss":
                series = [r.loss for r in runs]
            else:
                series = [{step: e[panel] for step, e in r.evals.items() if panel in e} for r in runs]
            steps, values = _seed_curves(series)
            mean, low, high = values.mean(0), values.min(0), values.max(0)
            if len(steps) < 3:  # a point or two (evaluated only at the end): error bars, a band would not show
                ax.errorbar(steps, mean, yerr=[mean - low, high - mean] if len(values) > 1 else None, marker="o",
                            capsize=3, label=variant)
                continue
            line, = ax.plot(steps, mean, label=variant)
            if len(values) > 1:
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title("training loss" if panel == "loss" else panel, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yscale("log" if panel.startswith("loss") else "linear")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    axes[0].legend(fontsize=7)
    _save(figure, path)


def sample_grid(path: str | os.PathLike, variants: dict[str, list[tuple[int, str]]]) -> None:
    """A row per variant, a column per seed: each run's final sample grid (same prompts and noise)."""
    cols = max(len(panels) for panels in variants.values())
    figure = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * len(variants)), layout="constrained")
    axes = figure.subplots(len(variants), cols, squeeze=False)
    for row, (variant, panels) in zip(axes, variants.items()):
        for ax in row:
            ax.set_axis_off()
        for ax, (seed, png) in zip(row, panels):
            image = Image.open(io.BytesIO(storage.Path(png).read_bytes())).convert("RGB")
            ax.imshow(np.asarray(image), interpolation="nearest")
            ax.set_title(f"{variant}, seed {seed}", fontsize=9)
    _save(figure, path)

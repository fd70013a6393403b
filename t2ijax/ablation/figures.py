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


def _mean_curve(curves: list[dict[int, float]]) -> tuple[list[int], list[float]]:
    """Mean over seeds at every step that each seed logged."""
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return steps, [float(np.mean([c[s] for c in curves])) for s in steps]


def curves(path: str | os.PathLike, variants: dict[str, list[RunResults]]) -> None:
    """One panel for the training loss and one per evaluated metric; a line per variant (mean over seeds)."""
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
            steps, values = _mean_curve(series)
            ax.plot(steps, values, marker="o" if len(steps) < 3 else None, label=variant)
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

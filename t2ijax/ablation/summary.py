"""Numbers of a report: per variant the mean and std over seeds of every metric, the delta to its axis's
baseline (the axis's first variant), and the best variant per metric."""
import dataclasses
import math

import numpy as np

from t2ijax.ablation.results import COST_COLUMNS, ID_COLUMNS

# Which way is better, by metric name prefix; metrics not listed get no "best".
HIGHER_IS_BETTER = ("composition/", "images_per_sec")
LOWER_IS_BETTER = ("loss", "fid", "fd_", "cmmd", "dino_mmd", "wall_time_s")


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is, 0 when unknown."""
    if metric.startswith(HIGHER_IS_BETTER):
        return 1
    return -1 if metric.startswith(LOWER_IS_BETTER) else 0


@dataclasses.dataclass
class VariantSummary:
    axis: str
    variant: str
    seeds: list[int]
    mean: dict[str, float]
    std: dict[str, float]    # sample std (ddof 1); nan with one seed
    delta: dict[str, float]  # mean - the baseline's mean; empty for the baseline itself
    is_baseline: bool


def columns(rows: list[dict]) -> list[str]:
    """The metrics of the rows, sorted, then images/s and wall time."""
    metrics = sorted({k for row in rows for k in row} - set(ID_COLUMNS) - set(COST_COLUMNS))
    return metrics + list(COST_COLUMNS)


def summarize(rows: list[dict]) -> list[VariantSummary]:
    """One summary per (axis, variant) in the rows' order; each axis's first variant is its baseline."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["axis"], row["variant"]), []).append(row)
    summaries, baselines = [], {}
    for (axis, variant), group in groups.items():
        mean, std = {}, {}
        for metric in columns(group):
            values = [row[metric] for row in group if metric in row and not math.isnan(row[metric])]
            if values:
                mean[metric] = float(np.mean(values))
                std[metric] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        is_baseline = axis not in baselines
        baseline = baselines.setdefault(axis, mean)
        delta = {} if is_baseline else {m: mean[m] - baseline[m] for m in mean.keys() & baseline.keys()}
        summaries.append(VariantSummary(axis, variant, [row["seed"] for row in group], mean, std, delta,
                                        is_baseline))
    return summaries


def best(summaries: list[VariantSummary], metric: str) -> VariantSummary | None:
    """The variant with the best mean of `metric`; None when the metric has no direction or values, or
    when several variants share the best mean."""
    sign = direction(metric)
    candidates = sorted((s for s in summaries if metric in s.mean), key=lambda s: -sign * s.mean[metric])
    if not sign or not candidates:
        return None
    if len(candidates) > 1 and candidates[0].mean[metric] == candidates[1].mean[metric]:
        return None
    return candidates[0]

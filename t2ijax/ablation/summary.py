"""Numbers of a report: per variant every metric's mean over seeds with its 95 % interval, the
difference to its axis's baseline (the axis's first variant) with Welch's interval and a verdict, and
the best variant per metric (see stats.py)."""
import dataclasses
import math
import re

from t2ijax.ablation import stats
from t2ijax.ablation.results import COST_COLUMNS, ID_COLUMNS, PROMPTS_COLUMN
from t2ijax.ablation.stats import Estimate

# Which way is better, by metric name prefix (after an "HxW/" size); metrics not listed get no "best".
HIGHER_IS_BETTER = ("composition/", "images_per_sec")
LOWER_IS_BETTER = ("loss", "fid", "fd_", "cmmd", "dino_mmd", "wall_time_s")
# Accuracies over the evaluated prompts: a single run's has a binomial standard error, the evaluator's own
# (metric + STANDARD_ERROR: compose's categories are over their own prompts) or from the run's prompt count.
ACCURACIES = ("composition/",)
STANDARD_ERROR = "_se"


def _unsized(metric: str) -> str:
    return re.sub(r"^\d+x\d+/", "", metric)


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is, 0 when unknown."""
    if _unsized(metric).startswith(HIGHER_IS_BETTER):
        return 1
    return -1 if _unsized(metric).startswith(LOWER_IS_BETTER) else 0


@dataclasses.dataclass
class VariantSummary:
    axis: str
    variant: str
    seeds: list[int]
    estimate: dict[str, Estimate]    # the mean over seeds and its interval
    difference: dict[str, Estimate]  # estimate - the baseline's (Welch); empty for the baseline itself
    verdict: dict[str, str]          # of each difference: better, worse, within noise, single seed
    is_baseline: bool

    @property
    def mean(self) -> dict[str, float]:
        return {m: e.mean for m, e in self.estimate.items()}


def columns(rows: list[dict]) -> list[str]:
    """The metrics of the rows, sorted, then images/s and wall time; a metric's standard error is no column."""
    names = {k for row in rows for k in row} - {*ID_COLUMNS, *COST_COLUMNS, PROMPTS_COLUMN}
    errors = {m + STANDARD_ERROR for m in names}
    return sorted(names - errors) + list(COST_COLUMNS)


def estimate(metric: str, group: list[dict]) -> Estimate | None:
    """`metric` over a variant's runs: the t interval over seeds from two on; a single run's accuracy
    with its binomial interval: the standard error its evaluation wrote beside it, else the one over the
    prompts it was scored on (when the row says how many)."""
    runs = [row for row in group if metric in row and not math.isnan(row[metric])]
    if not runs:
        return None
    if len(runs) == 1 and _unsized(metric).startswith(ACCURACIES):
        if metric + STANDARD_ERROR in runs[0]:
            return Estimate(runs[0][metric], runs[0][metric + STANDARD_ERROR], math.inf)
        if runs[0].get(PROMPTS_COLUMN):
            return stats.binomial(runs[0][metric], runs[0][PROMPTS_COLUMN])
    return stats.over_seeds([row[metric] for row in runs])


def summarize(rows: list[dict]) -> list[VariantSummary]:
    """One summary per (axis, variant) in the rows' order; each axis's first variant is its baseline."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["axis"], row["variant"]), []).append(row)
    summaries, baselines = [], {}
    for (axis, variant), group in groups.items():
        estimates = {m: e for m in columns(group) if (e := estimate(m, group)) is not None}
        is_baseline = axis not in baselines
        baseline = baselines.setdefault(axis, estimates)
        differences = {} if is_baseline else {m: stats.difference(estimates[m], baseline[m])
                                              for m in estimates if m in baseline}
        verdicts = {m: stats.verdict(d, direction(m)) for m, d in differences.items()}
        summaries.append(VariantSummary(axis, variant, [row["seed"] for row in group], estimates, differences,
                                        verdicts, is_baseline))
    return summaries


def _best_mean(summaries: list[VariantSummary], metric: str) -> VariantSummary | None:
    sign = direction(metric)
    candidates = sorted((s for s in summaries if metric in s.estimate), key=lambda s: -sign * s.mean[metric])
    if not sign or not candidates:
        return None
    if len(candidates) > 1 and candidates[0].mean[metric] == candidates[1].mean[metric]:
        return None
    return candidates[0]


def best(summaries: list[VariantSummary], metric: str) -> tuple[VariantSummary | None, bool]:
    """(the variant to show as best for `metric`, whether it beats the baseline beyond noise). That is
    the best mean among the variants whose difference is "better", when there are any; else the best
    mean of all (the baseline included), not a finding. None when the metric has no direction or
    values, or when the best mean is shared."""
    better = [s for s in summaries if s.verdict.get(metric) == "better"]
    return (_best_mean(better, metric), True) if better else (_best_mean(summaries, metric), False)

"""95 % confidence intervals of an ablation's numbers and the verdict of a difference.

A mean over two or more seeds has Student's t interval (n - 1 degrees of freedom); an accuracy of a
single run over N prompts has the binomial standard error sqrt(p (1 - p) / N) (infinite degrees of
freedom: the normal 1.96). A difference of two means is Welch's interval: the standard errors add in
squares and the degrees of freedom are Welch–Satterthwaite's, where a binomial side counts as known.
"""
import dataclasses
import math

import numpy as np
import scipy.stats

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
    mean: float
    se: float = math.nan   # standard error of the mean; nan when unknown (one seed of a metric with no binomial)
    dof: float = math.nan  # degrees of freedom of `se`; inf when it is binomial

    @property
    def half_width(self) -> float:
        """Half the 95 % interval: mean ± half_width; nan when the spread is unknown."""
        if math.isnan(self.se):
            return math.nan
        return float(scipy.stats.t.ppf((1 + LEVEL) / 2, self.dof)) * self.se if self.se else 0.0


def over_seeds(values: list[float]) -> Estimate:
    """The mean of one value per seed, with its t interval from two seeds on."""
    n = len(values)
    if n < 2:
        return Estimate(float(values[0]))
    return Estimate(float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(n)), n - 1)


def binomial(accuracy: float, prompts: int) -> Estimate:
    """An accuracy over `prompts` independent prompts, with the binomial standard error."""
    return Estimate(accuracy, math.sqrt(accuracy * (1 - accuracy) / prompts), math.inf)


def difference(a: Estimate, b: Estimate) -> Estimate:
    """a - b with Welch's standard error and Welch–Satterthwaite degrees of freedom."""
    var_a, var_b = a.se ** 2, b.se ** 2
    spread = var_a ** 2 / a.dof + var_b ** 2 / b.dof  # 0 / inf is 0: a binomial side adds no dof term
    dof = (var_a + var_b) ** 2 / spread if spread else math.inf
    return Estimate(a.mean - b.mean, math.sqrt(var_a + var_b), dof)


def verdict(diff: Estimate, sign: int) -> str:
    """"better" or "worse" when the interval of `diff` (a variant - the baseline) excludes 0, in the
    direction `sign` (+1: higher is better, -1: lower, 0: unknown, then "differs"); else "within
    noise"; "single seed" when the difference has no interval."""
    if math.isnan(diff.se):
        return "single seed"
    if abs(diff.mean) <= diff.half_width:
        return "within noise"
    if not sign:
        return "differs"
    return "better" if diff.mean * sign > 0 else "worse"

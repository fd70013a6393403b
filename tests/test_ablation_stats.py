"""Report statistics on a fixed small results table: each interval against a hand computation (the
numbers written out below) and against scipy.stats' own t-test, the verdicts, which variant is named
best, and the single-seed binomial case."""
import math

import pytest
import scipy.stats

from t2ijax.ablation import stats, summary
from t2ijax.ablation.report import write_combined_report
from t2ijax.ablation.results import read_csv, write_csv

SHAPE, LOSS = "composition/shape", "loss_t[0.0,0.3)"
# (axis, variant): one (shape accuracy, loss) per seed. Axis "a" has a clear gain ("up"), a clear
# loss ("down") and a noisy variant whose mean is the highest; axis "b" has only the noisy one.
SEEDS = {
    ("a", "base"): [(0.50, 0.30), (0.55, 0.32), (0.60, 0.34)],
    ("a", "up"): [(0.70, 0.20), (0.72, 0.21), (0.74, 0.22)],
    ("a", "down"): [(0.40, 0.30), (0.41, 0.34), (0.42, 0.38)],
    ("a", "noisy"): [(0.60, 0.31), (1.00, 0.33), (0.80, 0.35)],
    ("b", "base"): [(0.50, 0.30), (0.55, 0.32), (0.60, 0.34)],
    ("b", "noisy"): [(0.60, 0.31), (1.00, 0.33), (0.80, 0.35)],
}
PROMPTS = 128


def _rows(seeds: dict) -> list[dict]:
    return [dict(axis=axis, variant=variant, seed=k, workdir="", step=1, num_prompts=PROMPTS,
                 **{SHAPE: shape, LOSS: loss})
            for (axis, variant), values in seeds.items() for k, (shape, loss) in enumerate(values)]


@pytest.fixture(scope="module")
def summaries():
    return {(s.axis, s.variant): s for s in summary.summarize(_rows(SEEDS))}


def _values(axis, variant, metric):
    return [seed[0 if metric == SHAPE else 1] for seed in SEEDS[axis, variant]]


def test_mean_interval_is_student_t_over_seeds(summaries):
    base = summaries["a", "base"].estimate[SHAPE]
    # mean 0.55, sample std 0.05, se 0.05 / sqrt(3) = 0.028868; t(0.975, 2 dof) = 4.302653
    assert base.mean == pytest.approx(0.55) and base.se == pytest.approx(0.028868, abs=1e-6)
    assert base.half_width == pytest.approx(0.124207, abs=1e-6)
    low, high = scipy.stats.t.interval(0.95, 2, loc=0.55, scale=scipy.stats.sem(_values("a", "base", SHAPE)))
    assert (base.mean - base.half_width, base.mean + base.half_width) == pytest.approx((low, high))


@pytest.mark.parametrize("variant, metric, delta, half_width, dof, verdict", [
    # se^2 = 0.05^2 / 3 + 0.02^2 / 3 = 0.00096667; dof = se^4 / (0.00083333^2 / 2 + 0.00013333^2 / 2)
    ("up", SHAPE, +0.17, 0.107471, 2.624025, "better"),
    ("down", SHAPE, -0.14, 0.118099, 2.159744, "worse"),
    ("up", LOSS, -0.11, None, None, "better"),   # lower loss is better
    ("down", LOSS, +0.02, None, None, "within noise"),
    ("noisy", SHAPE, +0.25, 0.461438, 2.249027, "within noise"),
])
def test_difference_is_welchs_interval(summaries, variant, metric, delta, half_width, dof, verdict):
    diff = summaries["a", variant].difference[metric]
    assert diff.mean == pytest.approx(delta)
    if half_width is not None:
        assert (diff.half_width, diff.dof) == pytest.approx((half_width, dof), abs=1e-6)
    welch = scipy.stats.ttest_ind(_values("a", variant, metric), _values("a", "base", metric), equal_var=False)
    interval = welch.confidence_interval(0.95)
    assert (diff.mean - diff.half_width, diff.mean + diff.half_width) == pytest.approx((interval.low, interval.high))
    assert diff.dof == pytest.approx(welch.df)
    assert summaries["a", variant].verdict[metric] == verdict


def test_the_best_mean_within_noise_is_not_named_best(summaries, tmp_path):
    axis_a = [s for s in summaries.values() if s.axis == "a"]
    axis_b = [s for s in summaries.values() if s.axis == "b"]
    assert summary.best(axis_a, SHAPE) == (summaries["a", "up"], True)  # not "noisy", whose mean is higher
    assert summary.best(axis_b, SHAPE) == (summaries["b", "noisy"], False)
    assert summary.best(axis_b, LOSS) == (summaries["b", "base"], False)  # noisy's loss is higher, within noise

    for axis in ("a", "b"):
        (tmp_path / axis).mkdir()
        write_csv(tmp_path / axis / "results.csv", _rows({k: v for k, v in SEEDS.items() if k[0] == axis}))
    with open(write_combined_report([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "all"), "cmd")) as f:
        report = f.read()
    assert "| a | composition/shape | higher | up | 0.72 ± 0.05 | +0.17 ± 0.11 | better |" in report
    assert ("| b | composition/shape | higher | none beyond noise (best mean: noisy) | 0.8 ± 0.5 | +0.25 ± 0.46 | "
            "within noise |") in report
    assert "| b | loss_t[0.0,0.3) | lower | none beyond noise (best mean: the baseline) | 0.32 ± 0.05 | — | — |" in report
    assert "**0.72 ± 0.05 (+0.17 ± 0.11, better)**" in report  # the best beyond noise is bold; noisy is not
    assert "| a | noisy | 3 | 0.8 ± 0.5 (+0.25 ± 0.46, within noise) |" in report
    assert "| a | down | 3 | worse | within noise |" in report  # the verdict table
    assert "Welch" in report and "single-seed" not in report


def test_a_single_seed_accuracy_has_the_binomial_interval(tmp_path):
    rows = _rows({("c", "base"): [(0.75, 0.30)], ("c", "more"): [(0.875, 0.25)]})
    base, more = summary.summarize(rows)
    # se = sqrt(0.75 * 0.25 / 128) = 0.038273, 1.96 se = 0.075014; the difference's
    # se = sqrt(0.75 * 0.25 / 128 + 0.875 * 0.125 / 128) = 0.048159, 1.96 se = 0.094391 < 0.125
    assert base.estimate[SHAPE].half_width == pytest.approx(0.075014, abs=1e-6)
    assert more.difference[SHAPE].mean == pytest.approx(0.125)
    assert more.difference[SHAPE].half_width == pytest.approx(0.094391, abs=1e-6)
    assert more.verdict == {SHAPE: "better", LOSS: "single seed"}  # a loss has no spread from one run
    assert math.isnan(more.estimate[LOSS].half_width)

    (tmp_path / "c").mkdir()
    write_csv(tmp_path / "c" / "results.csv", rows)
    assert [row["num_prompts"] for row in read_csv(tmp_path / "c" / "results.csv")] == [PROMPTS, PROMPTS]
    with open(tmp_path / "c" / "results.csv") as f:
        assert f.readline().rstrip().endswith(",num_prompts")  # after the existing columns
    with open(write_combined_report([str(tmp_path / "c")], str(tmp_path / "all"), "cmd")) as f:
        report = f.read()
    assert "This is a single-seed report" in report
    assert "| more | 1 | **0.875 ± 0.057 (+0.125 ± 0.094, better)** | 0.25 (-0.05, single seed) |" in report
    assert "| loss_t[0.0,0.3) | lower | none beyond noise (best mean: more) | 0.25 | -0.05 | single seed |" in report
    assert "| images/s | higher |" not in report  # no values: no best row

    # Without the prompt count (a CSV written before num_prompts) an accuracy is single-seed too.
    old = [{k: v for k, v in row.items() if k != "num_prompts"} for row in rows]
    assert summary.summarize(old)[1].verdict[SHAPE] == "single seed"


def test_a_single_seed_accuracy_with_its_own_standard_error_uses_it():
    """A compose category's accuracy is over that category's prompts: the evaluator writes its binomial
    standard error beside it ("_se"), which wins over num_prompts and is no column of its own."""
    counting = "composition/counting"
    rows = [dict(axis="e", variant=v, seed=0, workdir="", step=1, num_prompts=PROMPTS, **{counting: p,
                 counting + "_se": math.sqrt(p * (1 - p) / 20)}) for v, p in (("base", 0.5), ("more", 0.9))]
    assert summary.columns(rows) == [counting, "images_per_sec", "wall_time_s"]
    base, more = summary.summarize(rows)
    # se = sqrt(0.25 / 20) = 0.111803, 1.959964 se = 0.219131; the difference's se = sqrt((0.25 + 0.09) / 20)
    # = 0.130384, 1.959964 se = 0.255548 < 0.4
    assert base.estimate[counting].half_width == pytest.approx(0.219131, abs=1e-6)
    assert more.difference[counting].half_width == pytest.approx(0.255548, abs=1e-6)
    assert more.verdict == {counting: "better"}
    rows[1][counting] = 0.7  # the same interval, now wider than the difference of 0.2
    assert summary.summarize(rows)[1].verdict == {counting: "within noise"}


def test_a_single_seed_variant_against_a_baseline_over_seeds():
    """The binomial side counts as known in Welch–Satterthwaite: dof = 2 (se_b^2 + se_v^2)^2 / se_b^4."""
    rows = _rows({("d", "base"): SEEDS["a", "base"], ("d", "one"): [(0.875, 0.25)]})
    diff = summary.summarize(rows)[1].difference[SHAPE]
    var_base, var_one = 0.05 ** 2 / 3, 0.875 * 0.125 / PROMPTS
    dof = 2 * (var_base + var_one) ** 2 / var_base ** 2
    assert diff.dof == pytest.approx(dof) and diff.se == pytest.approx(math.sqrt(var_base + var_one))
    assert diff.half_width == pytest.approx(scipy.stats.t.ppf(0.975, dof) * math.sqrt(var_base + var_one))


def test_direction_reads_past_a_size_prefix():
    assert summary.direction("32x64/composition/shape") == 1 and summary.direction("32x64/loss_t[0.0,0.3)") == -1
    assert stats.verdict(stats.Estimate(1.0, 0.1, math.inf), 0) == "differs"  # no known direction


def test_curves_show_the_seeds_spread(monkeypatch, tmp_path):
    """A band from the seeds' lowest to highest loss where a curve has many points, error bars where an
    evaluation has one; nothing for a variant with one seed."""
    from matplotlib.collections import PolyCollection

    from t2ijax.ablation import figures
    from t2ijax.ablation.results import RunResults

    def run(offset):
        return RunResults(4, {}, 1.0, 1.0, {s: 1.0 + offset + s for s in range(4)},
                          {4: {SHAPE: 0.5 + offset}}, "")

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: drawn.append(figure))
    figures.curves(tmp_path / "curves.png", {"two_seeds": [run(0.0), run(0.2)], "one_seed": [run(0.1)]})
    loss_panel, shape_panel = drawn[0].axes[:2]
    bands = [c for c in loss_panel.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # the two-seed variant's only
    low, high = bands[0].get_paths()[0].vertices[:, 1].min(), bands[0].get_paths()[0].vertices[:, 1].max()
    assert (low, high) == pytest.approx((1.0, 4.2))
    bars = [c for c in shape_panel.containers if c.has_yerr]
    assert len(bars) == 1
    assert bars[0].lines[2][0].get_segments()[0][:, 1] == pytest.approx([0.5, 0.7])  # min..max of the final eval

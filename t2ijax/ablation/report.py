"""Reports: DIR/report.md, DIR/results.csv, DIR/curves.png and DIR/samples.png of one grid, built from
its finished runs' directories alone; and one table over several grids' results.csv."""
import math
import os

from t2ijax import storage
from t2ijax.ablation import figures, summary
from t2ijax.ablation.grid import Axis, GridRun, is_finished, overrides_of
from t2ijax.ablation.results import read_csv, read_run, write_csv
from t2ijax.ablation.stats import Estimate
from t2ijax.ablation.summary import VariantSummary
from t2ijax.errors import ConfigError

HEADERS = {"images_per_sec": "images/s", "wall_time_s": "wall time (s)"}
READING = ("Each cell is the mean over seeds ± the half-width of its 95 % confidence interval (Student's t over "
           "seeds, n - 1 degrees of freedom) and, in brackets, the difference to the baseline's mean ± its 95 % "
           "interval by Welch's t (unequal variances, Welch–Satterthwaite degrees of freedom) with its verdict: "
           "better or worse when that interval excludes 0 (higher is better for accuracies and images/s, lower for "
           "losses, distances and wall time), else within noise. A run that is a variant's only seed has, for each "
           "accuracy over N prompts (a compose category's: that category's prompts), the binomial interval "
           "± 1.96 sqrt(p (1 - p) / N) (prompt sampling only: the "
           "spread between seeds comes on top), and no interval for the other metrics, whose verdict is then "
           "\"single seed\" (no claim). The best variant of each column (per axis), bold, is one that beats the "
           "baseline beyond noise. Metrics are the runs' final `eval.json` (see docs/evaluation.md); images/s is "
           "the median over the logged training intervals; wall time adds up each training process from setup to "
           "its final evaluation.")


def _row(cells) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _plus_minus(text: str, e: Estimate) -> str:
    """`text` ± the half-width of e's 95 % interval, when it has one."""
    return text if math.isnan(e.half_width) else f"{text} ± {e.half_width:.2g}"


def _value(e: Estimate) -> str:
    return _plus_minus(f"{e.mean:.4g}", e)


def _change(e: Estimate) -> str:
    return _plus_minus(f"{e.mean:+.3g}", e)


def _cell(s: VariantSummary, metric: str, is_best: bool) -> str:
    if metric not in s.estimate:
        return "—"
    text = _value(s.estimate[metric])
    if metric in s.difference:
        text += f" ({_change(s.difference[metric])}, {s.verdict[metric]})"
    return f"**{text}**" if is_best else text


def _by_axis(summaries: list[VariantSummary]) -> dict[str, list[VariantSummary]]:
    groups = {}
    for s in summaries:
        groups.setdefault(s.axis, []).append(s)
    return groups


def _axis_cells(axis: str, axis_column: list[str]) -> list[str]:
    return [axis] if axis_column else []


def metrics_table(summaries: list[VariantSummary], columns: list[str]) -> list[str]:
    """A row per variant; an axis column when the summaries come from several axes."""
    groups = _by_axis(summaries)
    axis_column = ["axis"] if len(groups) > 1 else []
    header = axis_column + ["variant", "seeds"] + [HEADERS.get(c, c) for c in columns]
    lines = [_row(header), _row(["---"] * len(header))]
    for axis, group in groups.items():
        named = {c: summary.best(group, c) for c in columns}  # bold: the best beyond noise
        for s in group:
            name = f"{s.variant} (baseline)" if s.is_baseline else s.variant
            lines.append(_row(_axis_cells(axis, axis_column) + [name, len(s.seeds)]
                              + [_cell(s, c, named[c][0] is s and named[c][1]) for c in columns]))
    return lines


def verdict_table(summaries: list[VariantSummary], columns: list[str]) -> list[str]:
    """A row per variant that is not a baseline: its verdict on every metric."""
    groups = _by_axis(summaries)
    axis_column = ["axis"] if len(groups) > 1 else []
    header = axis_column + ["variant", "seeds"] + [HEADERS.get(c, c) for c in columns]
    lines = [_row(header), _row(["---"] * len(header))]
    for axis, group in groups.items():
        for s in (s for s in group if not s.is_baseline):
            lines.append(_row(_axis_cells(axis, axis_column) + [s.variant, len(s.seeds)]
                              + [s.verdict.get(c, "—") for c in columns]))
    return lines


def best_table(summaries: list[VariantSummary], columns: list[str]) -> list[str]:
    groups = _by_axis(summaries)
    axis_column = ["axis"] if len(groups) > 1 else []
    header = axis_column + ["metric", "better", "best variant", "mean", "vs baseline", "verdict"]
    lines = [_row(header), _row(["---"] * len(header))]
    for axis, group in groups.items():
        for metric in (c for c in columns if summary.direction(c) and any(c in s.estimate for s in group)):
            shown, beats = summary.best(group, metric)
            better = "higher" if summary.direction(metric) > 0 else "lower"
            if shown is None:
                cells = ["(a tie)", "—", "—", "—"]
            else:
                name = shown.variant if beats else ("none beyond noise (best mean: "
                                                    f"{'the baseline' if shown.is_baseline else shown.variant})")
                vs = ("—", "—") if shown.is_baseline else (_change(shown.difference[metric]), shown.verdict[metric])
                cells = [name, _value(shown.estimate[metric]), *vs]
            lines.append(_row(_axis_cells(axis, axis_column) + [HEADERS.get(metric, metric), better, *cells]))
    return lines


def single_seed_note(summaries: list[VariantSummary]) -> list[str]:
    """A paragraph naming the variants with one seed, or nothing when every variant has several."""
    single = [s for s in summaries if len(s.seeds) == 1]
    if not single:
        return []
    several_axes = len(_by_axis(summaries)) > 1
    which = ("This is a single-seed report: every variant has one run" if len(single) == len(summaries) else
             "Single seed: " + ", ".join(f"{s.variant} ({s.axis})" if several_axes else s.variant for s in single)
             + " (one run each)")
    return [which + "; their accuracies carry the binomial interval over the prompts, their other metrics no "
            "interval, so their loss and cost differences get no verdict (\"single seed\"). Rerun with "
            "`--seeds=3` for intervals over seeds.", ""]


def _write(path: storage.Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return os.fspath(path)


def _variants_table(by_variant: dict[str, list], baseline: GridRun) -> list[str]:
    lines = [_row(["variant", "differs from the baseline in"]), _row(["---", "---"])]
    for variant, pairs in by_variant.items():
        changed = overrides_of(pairs[0][0], baseline)
        lines.append(_row([variant, ", ".join(f"`{k}={v!r}`" for k, v in changed.items()) or "(the baseline)"]))
    return lines


def write_axis_report(axis: Axis, workdir: str, runs: list[GridRun], command: str) -> str:
    """Writes the report of the finished runs among `runs` (the baseline's first); returns its path."""
    finished = [run for run in runs if is_finished(run)]
    if not any(run.variant == axis.baseline for run in finished):
        raise ConfigError(f"the baseline '{axis.baseline}' has no finished run under {workdir}, and deltas are taken "
                          "to it; run the grid (without --report_only) first")
    from t2ijax.metrics.evaluation import tensorboard_dir

    by_variant = {}
    for run in finished:
        results = read_run(run.workdir, tensorboard_dir(run.config.log, run.workdir))
        by_variant.setdefault(run.variant, []).append((run, results))
    rows = [dict(axis=axis.name, variant=run.variant, seed=run.seed, workdir=run.workdir, step=res.step, **res.final,
                 images_per_sec=res.images_per_sec, wall_time_s=res.wall_time_s,
                 num_prompts=min(run.config.eval.num_samples, run.config.data.num_validation))
            for pairs in by_variant.values() for run, res in pairs]
    directory = storage.Path(workdir)
    write_csv(directory / "results.csv", rows)
    figures.curves(directory / "curves.png", {v: [res for _, res in pairs] for v, pairs in by_variant.items()})
    figures.sample_grid(directory / "samples.png",
                        {v: [(run.seed, res.samples) for run, res in pairs] for v, pairs in by_variant.items()})

    baseline = finished[0]
    columns = summary.columns(rows)
    summaries = summary.summarize(rows)
    left_out = [f"{run.label} (`{run.workdir}`)" for run in runs if run not in finished]
    lines = [f"# Ablation: {axis.name}", "",
             f"Axis `{axis.path}`, baseline **{axis.baseline}**; {len(finished)} finished run(s) under "
             f"`{workdir}/<variant>/seed_<k>` (config.seed = k). Written by `{command}`; the same command with "
             "`--report_only` rebuilds it from the runs' directories.", ""]
    if left_out:
        lines += ["Left out, not run or not finished: " + ", ".join(left_out) + ".", ""]
    lines += ["## Variants", "", *_variants_table(by_variant, baseline), "",
              "## Final metrics", "", READING, "", *single_seed_note(summaries), *metrics_table(summaries, columns),
              "", "## Verdicts", "", *verdict_table(summaries, columns), "",
              "## Best variant per metric", "", *best_table(summaries, columns), "",
              "## Curves", "", "Training loss (log scale) and every periodic evaluation over steps: a line per "
              "variant, the mean over seeds, shaded from the seeds' lowest to highest value (from 2 seeds on).",
              "", "![curves](curves.png)", "",
              "## Samples", "",
              f"Each panel is a run's final `samples/step_*.png`: the same prompts and noise (config.sampler.seed = "
              f"{baseline.config.sampler.seed}) for every variant, each sampled with its own config.sampler. "
              "Prompts, left to right then top to bottom:", ""]
    lines += [f"{i}. {prompt}" for i, prompt in enumerate(baseline.config.sample.prompts, start=1)]
    lines += ["", "![samples](samples.png)"]
    return _write(directory / "report.md", lines)


def _link(target: storage.Path, directory: storage.Path) -> str:
    """`target` relative to `directory` when both are on this disk, else its URL or absolute path."""
    if storage.is_url(target) or storage.is_url(directory):
        return os.fspath(target)
    return os.path.relpath(target, directory)


def write_combined_report(grid_dirs: list[str], workdir: str, command: str) -> str:
    """One table of the grids' results.csv (each written by its own report) in `workdir`; returns its path."""
    rows, axes = [], {}
    for directory in grid_dirs:
        path = storage.Path(directory) / "results.csv"
        if not path.exists():
            raise ConfigError(f"{path} not found; write that grid's report first (python -m t2ijax.ablate "
                              f"--config=configs/ablations/<axis>.py --workdir={directory} --report_only)")
        grid_rows = read_csv(path)
        for axis in {row["axis"] for row in grid_rows}:
            if axis in axes:
                raise ConfigError(f"axis '{axis}' is in both {axes[axis]} and {directory}; combine one grid per axis")
            axes[axis] = directory
        rows += grid_rows
    out = storage.Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", rows)
    columns = summary.columns(rows)
    summaries = summary.summarize(rows)
    links = ", ".join(f"[{a}]({_link(storage.Path(d) / 'report.md', out)})" for a, d in axes.items())
    lines = ["# Ablations: " + ", ".join(axes), "", f"Written by `{command}` from {links}.", "",
             READING + " Differences are to each axis's own baseline.", "", *single_seed_note(summaries),
             *metrics_table(summaries, columns), "", "## Verdicts", "", *verdict_table(summaries, columns), "",
             "## Best variant per metric and axis", "", *best_table(summaries, columns)]
    return _write(out / "report.md", lines)

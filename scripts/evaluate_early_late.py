"""Scores an early and a late checkpoint of one run with the same settings, and says which
metrics moved the right way (docs/evaluation.md, "Recorded run").

  python scripts/evaluate_early_late.py --workdir=DIR --early=2000 --late=4000 \
      [any t2ijax.evaluate flag: --num_samples --metrics --seed ...]
"""
import sys

from absl import app, flags

from t2ijax import evaluate
from t2ijax.errors import ConfigError
from t2ijax.metrics.evaluation import evaluate_checkpoint

flags.DEFINE_integer("early", None, "The early checkpoint's step.", required=True)
flags.DEFINE_integer("late", None, "The late checkpoint's step.", required=True)
FLAGS = flags.FLAGS
HIGHER_IS_BETTER = ("composition/",)  # every other metric is a loss or a distance


def main(argv):
    del argv
    sampler, overrides = evaluate.flag_overrides()
    try:
        early, late = (evaluate_checkpoint(FLAGS.workdir, step, FLAGS.prompts, FLAGS.seed, None, sampler,
                                           **overrides)[0]
                       for step in (FLAGS.early, FLAGS.late))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(f"{'metric':28s} {'step ' + str(FLAGS.early):>12s} {'step ' + str(FLAGS.late):>12s}  moved")
    for name in sorted(k for k, v in early.items() if isinstance(v, float) and k in late):
        higher_better = name.startswith(HIGHER_IS_BETTER)
        improved = late[name] > early[name] if higher_better else late[name] < early[name]
        verdict = "right way" if improved else ("unchanged" if late[name] == early[name] else "WRONG WAY")
        print(f"{name:28s} {early[name]:12.5g} {late[name]:12.5g}  {verdict}")


if __name__ == "__main__":
    app.run(main)

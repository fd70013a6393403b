"""Run an ablation axis and report what moved.

  python -m t2ijax.ablate --config=configs/ablations/path.py --workdir=workdirs/ablations/path \
      [--baseline=compose_tiny] [--variants=vp_cosine,vp_linear] [--seeds=3 (default)] [--report_only] \
      [--config.total_steps=800 ...]
  python -m t2ijax.ablate --combine=workdirs/ablations/path,workdirs/ablations/prediction \
      --workdir=workdirs/ablations/formulation

Trains each variant x seed into DIR/<variant>/seed_<k> one after the other (finished runs are
skipped, interrupted ones resume), then writes DIR/report.md, DIR/results.csv, DIR/curves.png and
DIR/samples.png. --config.<field>=value overrides apply to every variant. Every variant is checked
before anything trains. How to read a report: docs/ablations/README.md.
"""
import shlex
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from t2ijax import storage
from t2ijax.cli import loaded_config, parse_flags, quiet_libraries

flags.DEFINE_string("workdir", None, "Grid directory (local or gs://): runs in DIR/<variant>/seed_<k>, the report "
                    "in DIR.", required=True)
config_flags.DEFINE_config_file("config", None, "An ablation axis, configs/ablations/<axis>.py.", lock_config=True)
flags.DEFINE_string("baseline", None, "A config in configs/ (e.g. compose_tiny) that every variant overrides instead "
                    "of the axis's baseline, configs/shapes_tiny.py.")
flags.DEFINE_list("variants", None, "Variants to run (default: all of the axis); the baseline always runs.")
flags.DEFINE_integer("seeds", 3, "Seeds per variant: config.seed = 0 .. seeds - 1 (from 2 on each mean gets a t "
                     "interval over seeds; 1 makes a single-seed report).")
flags.DEFINE_bool("report_only", False, "Train nothing: rebuild the report from the finished runs in --workdir.")
flags.DEFINE_list("combine", None, "Grid directories, each with its report: one table of all of them in --workdir.")
FLAGS = flags.FLAGS


def ablate(command: str) -> str:
    """Checks, trains what is missing (unless --report_only), reports; returns the report's path."""
    import jax

    from t2ijax.ablation import grid
    from t2ijax.ablation.report import write_axis_report
    from t2ijax.errors import ConfigError

    if FLAGS.config is None:
        raise ConfigError("pass --config=configs/ablations/<axis>.py, or --combine=DIR,DIR to join finished grids")
    loaded_config(FLAGS.config)
    axis = grid.load_axis(config_flags.get_config_filename(FLAGS["config"]), FLAGS.baseline)
    variants = grid.select_variants(axis, FLAGS.variants)
    runs = grid.plan(axis, FLAGS.workdir, variants, FLAGS.seeds, config_flags.get_override_values(FLAGS["config"]))
    if FLAGS.report_only:
        grid.check(runs)  # a report needs no devices: the mesh is not checked
    else:
        grid.check(runs, jax.device_count(), jax.process_count())
        grid.run_missing(runs)
    if jax.process_index() != 0:
        return ""
    return write_axis_report(axis, FLAGS.workdir, runs, command)


def main(argv):
    quiet_libraries()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; overrides look like --config.total_steps=800")
    from t2ijax.ablation.report import write_combined_report
    from t2ijax.errors import ConfigError

    command = shlex.join(["python", "-m", "t2ijax.ablate", *sys.argv[1:]])
    try:
        for directory in (FLAGS.workdir, *(FLAGS.combine or ())):
            storage.check_bucket(directory)
        path = write_combined_report(FLAGS.combine, FLAGS.workdir, command) if FLAGS.combine else ablate(command)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if path:
        logging.info("done")
        print(f"report: {path}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

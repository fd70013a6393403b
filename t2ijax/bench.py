"""Benchmarks, recorded in docs/benchmarks.md with the command, machine and date of every figure.

  python -m t2ijax.bench --config=configs/shapes_tiny.py --suite=data [--steps=200] [--json=FILE]

Suites:
  data: images/s the loader hands to the devices (the gather of a global batch from the cached arrays,
        the latent or pixel mapping and the transfer) against images/s the config's compiled train
        step consumes, on the config's own prepared data; the ratio is the loader's headroom.
"""
import datetime
import json
import sys

from absl import app, flags
from ml_collections import config_flags

from t2ijax import throughput
from t2ijax.cli import loaded_config, parse_flags, quiet_libraries

flags.DEFINE_enum("suite", "data", ["data"], "What to measure.")
flags.DEFINE_integer("steps", 200, "Timed iterations (after one untimed warm-up).")
flags.DEFINE_string("json", "", "Also write the result to this JSON file.")
config_flags.DEFINE_config_file("config", "configs/shapes_tiny.py", "Config file (see configs/).", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
    quiet_libraries()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    import jax

    config = loaded_config(FLAGS.config)
    result = {"suite": FLAGS.suite, "steps": FLAGS.steps, **throughput.data_suite(config, FLAGS.steps),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "machine": throughput.machine(), "jax": jax.__version__}
    width = max(map(len, result))
    print("\n".join(f"{key:<{width}}  {value}" for key, value in result.items()))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

"""Benchmarks, recorded in docs/benchmarks.md with the command, machine and date of every figure.

  python -m t2ijax.bench --config=configs/shapes_tiny.py --suite=data [--steps=200] [--json=FILE]

Suites:
  data: images/s the loader hands to the devices (the gather of a global batch from the cached arrays,
        the latent or pixel mapping and the transfer) against images/s the config's compiled train
        step consumes, on the config's own prepared data; the ratio is the loader's headroom.
"""
import datetime
import json
import os
import platform
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from t2ijax.cli import loaded_config, parse_flags, quiet_libraries

flags.DEFINE_enum("suite", "data", ["data"], "What to measure.")
flags.DEFINE_integer("steps", 200, "Timed iterations (after one untimed warm-up).")
flags.DEFINE_string("json", "", "Also write the result to this JSON file.")
config_flags.DEFINE_config_file("config", "configs/shapes_tiny.py", "Config file (see configs/).", lock_config=True)
FLAGS = flags.FLAGS


def _machine() -> str:
    import jax

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{cpu} ({os.cpu_count()} cores), {jax.device_count()} x {jax.devices()[0].device_kind}"


def _images_per_second(step_fn, steps: int, batch_size: int) -> float:
    import jax

    jax.block_until_ready(step_fn(0))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        out = step_fn(step)
    jax.block_until_ready(out)
    return steps * batch_size / (time.perf_counter() - start)


def data_suite(config, steps: int) -> dict:
    from t2ijax.train import Run

    with tempfile.TemporaryDirectory() as workdir:
        run = Run(config, workdir).setup()
        batch_size = config.data.global_batch_size
        loader = _images_per_second(run.device_batch, steps, batch_size)
        state, batch = run.state, run.device_batch(0)

        def train_step(_):
            nonlocal state
            state, metrics = run.train_step(state, batch)
            return metrics

        step = _images_per_second(train_step, steps, batch_size)
        run.checkpointer.close()
    return {"loader_images_per_s": round(loader, 1), "train_step_images_per_s": round(step, 1),
            "headroom": round(loader / step, 1), "global_batch_size": batch_size,
            "train_examples": {"x".join(map(str, size)): len(next(iter(group.values())))
                               for size, group in run.data.train.items()}}


def main(argv):
    quiet_libraries()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    import jax

    config = loaded_config(FLAGS.config)
    result = {"suite": FLAGS.suite, "steps": FLAGS.steps, **data_suite(config, FLAGS.steps),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "machine": _machine(), "jax": jax.__version__}
    width = max(map(len, result))
    print("\n".join(f"{key:<{width}}  {value}" for key, value in result.items()))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

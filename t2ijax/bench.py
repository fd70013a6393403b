"""Benchmarks, recorded in docs/benchmarks.md with the command, machine and date of every figure.

  python -m t2ijax.bench --config=configs/bench_cpu.py --suite=train,sample,compile [--json=FILE]
  python -m t2ijax.bench --config=configs/shapes_tiny.py --suite=data
  python -m t2ijax.bench --config=configs/prx_small.py --suite=smoke --steps=20 --config.bench.batch_size=8

Suites (comma-separated):
  train:   the compiled train step on random inputs of config.bench's shapes: images/s, image tokens/s,
           model FLOPs per step (analytic, and XLA's count), MFU against a matmul peak measured in the
           same run, memory, compile time; and diffusers' PRXTransformer2DModel at the same configuration
           (forward, backward, AdamW), eager and under torch.compile, with the ratios.
  sample:  the sampling loop (config.sampler's steps, guidance) in latent space, against the reference's.
  attention: one attention layer at the bench's shapes, forward and forward + backward, for every
           implementation this backend runs (xla, flash; cudnn on GPUs, splash on TPUs), against torch's
           scaled_dot_product_attention on the same inputs.
  compile: the train step's compile time at the config's depth against config.bench.compile_depth.
  data:    images/s the loader hands to the devices against images/s the train step consumes, on the
           config's own prepared data.
  smoke:   the first run on a new accelerator: the train step compiled at every training size (seconds
           each), then timed at data.resolution's square on random inputs (config.bench's batch and caption
           shapes): step time, MFU, memory (the device's peak where it reports one, XLA's plan) and the
           step's collectives, each timed alone, against the chip's bandwidth estimate; an attention kernel
           this backend lacks falls back to xla with one logged line.
--noreference skips the PyTorch reference (which needs torch and diffusers: pip install -e '.[test]').
"""
import datetime
import importlib.metadata
import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from t2ijax import host_memory
from t2ijax.cli import loaded_config, parse_flags, quiet_libraries

SUITES = ("train", "sample", "attention", "compile", "data", "smoke")
REFERENCED = {"train", "sample", "attention"}  # the suites that time a PyTorch reference
flags.DEFINE_list("suite", ["train"], f"What to measure, any of {','.join(SUITES)}.")
flags.DEFINE_integer("steps", 10, "Timed train steps or loader batches (after one untimed).")
flags.DEFINE_integer("loops", 2, "Timed sampling loops (after one untimed).")
flags.DEFINE_bool("reference", True, "Also time diffusers' PRXTransformer2DModel at the same configuration.")
flags.DEFINE_string("json", "", "Also write the result to this JSON file.")
config_flags.DEFINE_config_file("config", "configs/bench_cpu.py", "Config file (see configs/).",
                                lock_config=True)
FLAGS = flags.FLAGS
VERSIONS = ("jax", "jaxlib", "flax", "optax", "torch", "diffusers")


def versions() -> dict:
    found = {}
    for package in VERSIONS:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def check_flags(suites: list[str], reference: bool) -> None:
    from t2ijax.errors import ConfigError

    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise ConfigError(f"unknown --suite {','.join(unknown)}; choose from {','.join(SUITES)}")
    if reference and REFERENCED & set(suites) and not {"torch", "diffusers"} <= set(versions()):
        raise ConfigError("the PyTorch reference needs torch and diffusers: pip install -e '.[test]', "
                          "or pass --noreference")
    if min(FLAGS.steps, FLAGS.loops) < 1:
        raise ConfigError(f"--steps={FLAGS.steps} --loops={FLAGS.loops}: time at least one of each")


def run_suites(config, suites: list[str], steps: int, loops: int, reference: bool) -> dict:
    from t2ijax.benchmarks import suites as measured

    return {name: measured.SUITES[name](config, steps, loops, reference) for name in suites}


def table(result: dict) -> str:
    """One `suite.field  value` line per measured number."""
    rows = [(f"{suite}.{key}", value) for suite, fields in result["suites"].items()
            for key, value in _flat(fields)]
    width = max(len(name) for name, _ in rows)
    shown = lambda value: f"{value:.4g}" if isinstance(value, float) else value
    return "\n".join(f"{name:<{width}}  {shown(value)}" for name, value in rows)


def _flat(fields: dict, prefix: str = ""):
    for key, value in fields.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def main(argv):
    quiet_libraries()
    kept_freed_blocks = host_memory.tune_for_cpu()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    import jax

    from t2ijax.benchmarks.timing import machine
    from t2ijax.errors import ConfigError
    from t2ijax.sharding import initialize_distributed

    try:
        check_flags(FLAGS.suite, FLAGS.reference)
        config = loaded_config(FLAGS.config)
        initialize_distributed(config.distributed)
        if FLAGS.reference and REFERENCED & set(FLAGS.suite) and jax.process_count() > 1:
            raise ConfigError(f"the PyTorch reference runs on one host and this job has {jax.process_count()} "
                              "processes; pass --noreference")
        result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
                  "machine": machine(), "versions": versions(),
                  # the host allocator's settings (t2ijax/host_memory.py, docs/benchmarks.md)
                  "host_malloc_keeps_freed_blocks": kept_freed_blocks,
                  "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
                  "config": config_flags.get_config_filename(FLAGS["config"]), "steps": FLAGS.steps,
                  "loops": FLAGS.loops,
                  "suites": run_suites(config, FLAGS.suite, FLAGS.steps, FLAGS.loops, FLAGS.reference)}
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if jax.process_index() != 0:  # every process measured its share; one reports
        return
    print(f"{result['date']}  {result['machine']}  {result['versions']}")
    print(table(result))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

"""Trains many variants of the shapes demo side by side on one accelerator and scores them.

For finding settings, not for the record: no checkpoints, and the data is rendered in memory
(no TensorFlow dataset build), so it runs on a bare JAX machine:

  python launch/quality_sweep.py --variants=variants.json --out=DIR \
      --text_encoder=PATH_TO_MINILM_DIR [--parallel=8]

variants.json maps a name to config overrides over configs/shapes_tiny.py, e.g.
{"base": {}, "shift3": {"diffusion.shift": 3.0}}. Each variant writes DIR/<name>.json
with its evaluations (config.eval.every_steps) and its steady-state step time.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import shapes_tiny  # noqa: E402
from t2ijax.data import shapes  # noqa: E402
from t2ijax.data.sources import DATASETS  # noqa: E402
from t2ijax.registry import declare  # noqa: E402

flags.DEFINE_string("variants", None, "JSON file: name -> {dotted config key: value}.", required=True)
flags.DEFINE_string("out", None, "Directory for per-variant JSON results.", required=True)
flags.DEFINE_string("text_encoder", "all-MiniLM-L6-v2", "config.text_encoder.name for every variant.")
flags.DEFINE_string("data_dir", "/tmp/quality_sweep_data", "Where the text cache goes.")
flags.DEFINE_integer("parallel", 4, "Variants trained at once.")
flags.DEFINE_string("worker", None, "Internal: train this one variant.")
FLAGS = flags.FLAGS


declare("data.name", "shapes_in_memory")


@DATASETS.register("shapes_in_memory")
def _shapes_in_memory(cfg, split: str, size: tuple[int, int]) -> dict[str, np.ndarray]:
    num = cfg.num_train if split == "train" else cfg.num_validation
    examples = [shapes.example(split, i, *size) for i in range(num)]
    return {k: np.asarray([e[k] for e in examples], object if k.startswith("caption") else None)
            for k in examples[0]}


def variant_config(overrides: dict):
    config = shapes_tiny.get_config()
    config.data.update(name="shapes_in_memory", data_dir=FLAGS.data_dir)
    config.text_encoder.name = FLAGS.text_encoder
    config.update_from_flattened_dict(overrides)
    return config


def train_variant(name: str, overrides: dict, workdir: str) -> dict:
    """Trains one variant with t2ijax.training.loop.Run's compiled step and evaluator, without its loop:
    evaluations at config.eval.every_steps and no checkpoints."""
    import flax.linen as nn
    import jax

    from t2ijax.training.loop import Run

    config = variant_config(overrides)
    run = Run(config, workdir).setup()
    result = {"name": name, "overrides": overrides, "evals": []}
    every = config.eval.every_steps or config.total_steps
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
        start = None
        for step in range(config.total_steps):
            if step == 10:
                jax.block_until_ready(run.state)
                start = time.time()
            run.state, _ = run.train_step(run.state, run.device_batch(step))
            if (step + 1) % every == 0 or step + 1 == config.total_steps:
                jax.block_until_ready(run.state)
                if step + 1 == config.total_steps:
                    result["seconds_per_step"] = (time.time() - start) / (step - 9)
                result["evals"].append(run.evaluators[""](step + 1, run.state.sampling_params))
    return result


def main(argv):
    del argv
    for name in "out", "data_dir":
        if "://" in FLAGS[name].value:
            sys.exit(f"error: --{name}={FLAGS[name].value}: a sweep on one machine writes local files; pass a local "
                     "directory")
    with open(FLAGS.variants) as f:
        variants = json.load(f)
    if FLAGS.worker:
        result = train_variant(FLAGS.worker, variants[FLAGS.worker], os.path.join(FLAGS.out, FLAGS.worker))
        with open(os.path.join(FLAGS.out, f"{FLAGS.worker}.json"), "w") as f:
            json.dump(result, f, indent=1)
        return
    os.makedirs(FLAGS.out, exist_ok=True)
    from t2ijax.data import write_records

    for layer in sorted({v.get("text_encoder.layer", -1) for v in variants.values()}):
        write_records.write(variant_config({"text_encoder.layer": layer}))  # preprocessed once, not by each worker
    pending, running = list(variants), {}
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    while pending or running:
        while pending and len(running) < FLAGS.parallel:
            name = pending.pop(0)
            log = open(os.path.join(FLAGS.out, f"{name}.log"), "w")
            running[name] = subprocess.Popen(
                [sys.executable, __file__, f"--variants={FLAGS.variants}", f"--out={FLAGS.out}",
                 f"--text_encoder={FLAGS.text_encoder}", f"--data_dir={FLAGS.data_dir}", f"--worker={name}"],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        time.sleep(1)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                print(f"{name}: exit {proc.returncode}", flush=True)
    for name in variants:
        path = os.path.join(FLAGS.out, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                last = json.load(f)["evals"][-1]
            print(f"{name:24s} step {last['step']:5d}  colour {last['composition/colour']:.3f}  "
                  f"shape {last['composition/shape']:.3f}  position {last['composition/position']:.3f}")


if __name__ == "__main__":
    app.run(main)

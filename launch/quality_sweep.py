"""Trains many variants of the shapes demo side by side on one accelerator and scores them.

For finding settings, not for the record: no checkpoints, no TensorBoard, and the data is
rendered in memory (no TensorFlow needed), so it runs on a bare JAX machine:

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

flags.DEFINE_string("variants", None, "JSON file: name -> {dotted config key: value}.", required=True)
flags.DEFINE_string("out", None, "Directory for per-variant JSON results.", required=True)
flags.DEFINE_string("text_encoder", "all-MiniLM-L6-v2", "config.text_encoder.name for every variant.")
flags.DEFINE_string("data_dir", "/tmp/quality_sweep_data", "Where the text cache goes.")
flags.DEFINE_integer("parallel", 4, "Variants trained at once.")
flags.DEFINE_string("worker", None, "Internal: train this one variant.")
FLAGS = flags.FLAGS


@DATASETS.register("shapes_in_memory")
def _shapes_in_memory(cfg, split: str) -> dict[str, np.ndarray]:
    num = cfg.num_train if split == "train" else cfg.num_validation
    examples = [shapes.example(split, i, cfg.resolution) for i in range(num)]
    return {k: np.asarray([e[k] for e in examples], object if k.startswith("caption") else None)
            for k in examples[0]}


def variant_config(overrides: dict):
    config = shapes_tiny.get_config()
    config.data.update(name="shapes_in_memory", data_dir=FLAGS.data_dir)
    config.text_encoder.name = FLAGS.text_encoder
    config.update_from_flattened_dict(overrides)
    return config


def train_variant(name: str, overrides: dict) -> dict:
    import flax.linen as nn
    import jax

    from t2ijax import evaluation, sharding, train_state
    from t2ijax.config import validate
    from t2ijax.data.loader import Loader
    from t2ijax.data.prepare import images_to_model_space, prepare
    from t2ijax.generate import Generator
    from t2ijax.models.autoencoders import load_autoencoder
    from t2ijax.diffusion.timesteps import time_shift
    from t2ijax.models.build import build_model, num_image_tokens
    from t2ijax.optim import make_optimizer
    from t2ijax.techniques import ema
    from t2ijax.train_step import make_heldout_loss, make_train_step

    config = variant_config(overrides)
    validate(config, jax.device_count())
    data = prepare(config)
    autoencoder = load_autoencoder(config.autoencoder.name)
    mesh, rules = sharding.make_mesh(config.mesh), sharding.logical_rules(config.sharding_rules)
    model = build_model(config.model, autoencoder.channels, data.train["text"].shape[-1])
    optimizer, schedule = make_optimizer(config.optim, config.total_steps)
    res = config.data.resolution // autoencoder.downsample
    example = train_state.example_inputs(config.data.global_batch_size, res, autoencoder.channels,
                                         *data.train["text"].shape[1:])
    state, shardings = train_state.create(config.seed, model, optimizer, example, mesh, rules,
                                          ema.enabled(config.ema))
    shift = time_shift(config.diffusion, num_image_tokens(config.model, res))
    step_fn = jax.jit(make_train_step(model, optimizer, schedule, config, data.null_text, data.null_mask, shift),
                      in_shardings=(shardings, sharding.batch_sharding(mesh)), donate_argnums=0)
    generator = Generator(model, autoencoder, config.diffusion, config.sampler, (res, res, autoencoder.channels),
                          shift, data.negative_text, data.negative_mask)
    evaluator = evaluation.Evaluator(config, data.validation, jax.jit(make_heldout_loss(model, config.diffusion)),
                                     generator, autoencoder, mesh)
    loader = Loader({k: data.train[k] for k in ("image", "text", "text_mask")}, config.data.global_batch_size,
                    config.seed)
    result = {"name": name, "overrides": overrides, "evals": []}
    every = config.eval.every_steps or config.total_steps
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        start = None
        for step in range(config.total_steps):
            if step == 10:
                jax.block_until_ready(state)
                start = time.time()
            batch = loader.batch(step)
            batch = {"x0": images_to_model_space(batch["image"], autoencoder), "text": batch["text"],
                     "text_mask": batch["text_mask"]}
            state, _ = step_fn(state, batch)
            if (step + 1) % every == 0 or step + 1 == config.total_steps:
                jax.block_until_ready(state)
                if step + 1 == config.total_steps:
                    result["seconds_per_step"] = (time.time() - start) / (step - 9)
                result["evals"].append(evaluator(step + 1, state.sampling_params))
    return result


def main(argv):
    del argv
    with open(FLAGS.variants) as f:
        variants = json.load(f)
    if FLAGS.worker:
        result = train_variant(FLAGS.worker, variants[FLAGS.worker])
        with open(os.path.join(FLAGS.out, f"{FLAGS.worker}.json"), "w") as f:
            json.dump(result, f, indent=1)
        return
    os.makedirs(FLAGS.out, exist_ok=True)
    from t2ijax.data.prepare import prepare

    for layer in sorted({v.get("text_encoder.layer", -1) for v in variants.values()}):
        prepare(variant_config({"text_encoder.layer": layer}))  # fill the text cache once
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

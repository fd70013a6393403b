"""Generate images from the latest checkpoint of a training run.

  python -m t2ijax.sample --workdir=workdirs/shapes_tiny --prompt "a red circle on the left" --out out.png
"""
import json
import os
import sys

import jax
import ml_collections
from absl import app, flags
from PIL import Image

flags.DEFINE_string("workdir", None, "A training run's directory (holds config.json and checkpoints/).",
                    required=True)
flags.DEFINE_multi_string("prompt", None, "Prompt; repeat the flag for several.", required=True)
flags.DEFINE_string("out", "samples.png", "Output PNG (a grid when there are several images).")
flags.DEFINE_integer("num_per_prompt", 1, "Images per prompt.")
flags.DEFINE_string("sampler", None, "Sampler name (default: the run's config.sampler.name).")
flags.DEFINE_integer("steps", None, "Sampler steps (default: the run's config.sampler.steps).")
flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (default: the run's).")
flags.DEFINE_string("negative_prompt", None, "Caption of the unconditional branch (default: the run's).")
flags.DEFINE_integer("seed", None, "Noise seed (default: the run's config.sampler.seed).")
flags.DEFINE_integer("upscale", 4, "Nearest-neighbour upscaling of the saved PNG, for viewing small images.")
FLAGS = flags.FLAGS


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; --workdir must be a t2ijax training run")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def sampler_settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The run's config.sampler with the command-line overrides applied, validated with the run."""
    from t2ijax.config import check_sampler

    sampler = ml_collections.ConfigDict(config.sampler.to_dict())
    overrides = dict(name=FLAGS.sampler, steps=FLAGS.steps, guidance=FLAGS.guidance,
                     negative_prompt=FLAGS.negative_prompt, seed=FLAGS.seed)
    sampler.update({k: v for k, v in overrides.items() if v is not None})
    check_sampler(sampler, config.diffusion)
    return sampler


def main(argv):
    del argv
    from t2ijax import sharding, train_state
    from t2ijax.checkpoint import Checkpointer
    from t2ijax.diffusion.timesteps import time_shift
    from t2ijax.errors import ConfigError
    from t2ijax.generate import Generator, image_grid
    from t2ijax.models.autoencoders import load_autoencoder
    from t2ijax.models.build import build_model, num_image_tokens
    from t2ijax.models.text import load_text_encoder
    from t2ijax.optim import make_optimizer
    from t2ijax.techniques import ema

    try:
        config = load_run_config(FLAGS.workdir)
        sampler = sampler_settings(config)
    except (FileNotFoundError, ConfigError) as e:
        sys.exit(f"error: {e}")
    checkpointer = Checkpointer(os.path.join(FLAGS.workdir, "checkpoints"), keep=config.checkpoint.keep)
    if checkpointer.latest_step() is None:
        sys.exit(f"error: no checkpoint under {checkpointer.directory}; train first with t2ijax.main")

    prompts = [p for p in FLAGS.prompt for _ in range(FLAGS.num_per_prompt)]
    encoder = load_text_encoder(config.text.encoder, max_length=config.text.max_length,
                                output_layer=config.text.output_layer)
    text, text_mask = encoder.encode(prompts)
    negative_text, negative_mask = encoder.encode([sampler.negative_prompt])

    autoencoder = load_autoencoder(config.autoencoder.name)
    model = build_model(config.model, autoencoder.channels, text.shape[-1])
    optimizer, _ = make_optimizer(config.optim, config.total_steps)
    mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))
    rules = sharding.logical_rules(config.sharding_rules)
    resolution = config.data.resolution // autoencoder.downsample
    example = train_state.example_inputs(1, resolution, autoencoder.channels, *text.shape[1:])
    state = checkpointer.restore(train_state.abstract(model, optimizer, example, mesh, rules,
                                                      ema.enabled(config.ema)))
    checkpointer.close()

    shift = time_shift(config.diffusion, num_image_tokens(config.model, resolution))
    generator = Generator(model, autoencoder, config.diffusion, sampler, (resolution, resolution, autoencoder.channels),
                          shift, negative_text[0], negative_mask[0])
    images = generator(state.sampling_params, text, text_mask)
    image = images[0] if len(images) == 1 else image_grid(images)
    out = Image.fromarray(image)
    out = out.resize((out.width * FLAGS.upscale, out.height * FLAGS.upscale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    out.save(FLAGS.out)
    print(f"wrote {FLAGS.out} ({len(images)} image(s), step {int(state.step)})")


if __name__ == "__main__":
    app.run(main)

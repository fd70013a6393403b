"""Generate images from the latest checkpoint of a training run.

  python -m t2ijax.sample --workdir=workdirs/shapes_tiny --prompt "a red circle on the left" --out out.png
"""
import os
import sys

from absl import app, flags
from PIL import Image

from t2ijax.errors import ConfigError

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


def main(argv):
    del argv
    from t2ijax.generate import image_grid
    from t2ijax.models.text import text_encoder_from_config
    from t2ijax.restore import load_run_config, restore_run, sampler_settings

    try:
        config = load_run_config(FLAGS.workdir)
        sampler = sampler_settings(config, name=FLAGS.sampler, steps=FLAGS.steps, guidance=FLAGS.guidance,
                                   negative_prompt=FLAGS.negative_prompt, seed=FLAGS.seed)
        prompts = [p for p in FLAGS.prompt for _ in range(FLAGS.num_per_prompt)]
        encoder = text_encoder_from_config(config.text_encoder)
        text, text_mask = encoder.encode(prompts)
        negative_text, negative_mask = encoder.encode([sampler.negative_prompt])
        run = restore_run(FLAGS.workdir, config, *text.shape[1:])
    except ConfigError as e:
        sys.exit(f"error: {e}")

    generator = run.generator(sampler, negative_text[0], negative_mask[0])
    images = generator(run.state.sampling_params, text, text_mask)
    image = images[0] if len(images) == 1 else image_grid(images)
    out = Image.fromarray(image)
    out = out.resize((out.width * FLAGS.upscale, out.height * FLAGS.upscale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    out.save(FLAGS.out)
    print(f"wrote {FLAGS.out} ({len(images)} image(s), step {run.step})")


if __name__ == "__main__":
    app.run(main)

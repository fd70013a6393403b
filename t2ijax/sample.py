"""Generate images from the latest checkpoint of a training run, or from a diffusers PRX pipeline.

  python -m t2ijax.sample --workdir=workdirs/shapes_tiny --prompt "a red circle on the left" --out out.png
  python -m t2ijax.sample --workdir=workdirs/shapes_tiny --height=32 --width=64 --prompt "a red circle" --out wide.png
  python -m t2ijax.sample --prx=/path/to/prx-512-t2i-sft --height=512 --width=768 --prompt "a cat" --out cat.png
"""
import io
import sys

import numpy as np
from absl import app, flags
from PIL import Image

from t2ijax import host_memory, storage
from t2ijax.cli import parse_flags, quiet_libraries
from t2ijax.errors import ConfigError

flags.DEFINE_string("workdir", None, "A training run's directory (holds config.json and checkpoints/), "
                    "local or gs://BUCKET/PATH.")
flags.DEFINE_string("prx", None, "Instead of --workdir: a diffusers PRX pipeline directory (or Hub id).")
flags.DEFINE_integer("height", None, "Image height in pixels (default: the run's config.data.resolution, or 512).")
flags.DEFINE_integer("width", None, "Image width in pixels (default: the run's config.data.resolution, or 512).")
flags.DEFINE_multi_string("prompt", None, "Prompt; repeat the flag for several.", required=True)
flags.DEFINE_string("out", "samples.png", "Output PNG (a grid when there are several images), local or gs://.")
flags.DEFINE_integer("num_per_prompt", 1, "Images per prompt.")
flags.register_validator("num_per_prompt", lambda n: n >= 1, "images per prompt: give at least 1 (the default)")
flags.DEFINE_string("sampler", None, "Sampler name (default: the run's config.sampler.name).")
flags.DEFINE_integer("steps", None, "Sampler steps (default: the run's config.sampler.steps).")
flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (default: the run's).")
flags.DEFINE_string("negative_prompt", None, "Caption of the unconditional branch (default: the run's).")
flags.DEFINE_integer("seed", None, "Noise seed (default: the run's config.sampler.seed).")
flags.DEFINE_integer("upscale", None, "Nearest-neighbour upscaling of the saved PNG (default: 4 for a run's "
                     "small images, 1 with --prx).")
flags.register_validator("upscale", lambda n: n is None or n >= 1, "a whole-number enlargement: give at least 1")
flags.register_multi_flags_validator(["workdir", "prx"], lambda f: (f["workdir"] is None) != (f["prx"] is None),
                                     "give exactly one of --workdir (a training run) and --prx (a diffusers pipeline)")
FLAGS = flags.FLAGS


def _size(default: int) -> tuple[int, int]:
    return tuple(default if side is None else side for side in (FLAGS.height, FLAGS.width))


def from_run(prompts: list[str]) -> tuple[np.ndarray, str]:
    from t2ijax.models.build import latent_size
    from t2ijax.models.text import text_encoder_from_config
    from t2ijax.models.text.encoder import warn_truncated
    from t2ijax.training.restore import load_run, load_run_config, sampler_settings

    config = load_run_config(FLAGS.workdir)
    size = _size(config.data.resolution)
    latent_size(config, *size)  # a bad size fails here, before the text encoder and the checkpoint load
    sampler = sampler_settings(config, name=FLAGS.sampler, steps=FLAGS.steps, guidance=FLAGS.guidance,
                               negative_prompt=FLAGS.negative_prompt, seed=FLAGS.seed)
    encoder = text_encoder_from_config(config.text_encoder)
    warn_truncated(encoder, FLAGS.prompt, "prompts")
    text, text_mask = encoder.encode(prompts)
    negative_text, negative_mask = encoder.encode([sampler.negative_prompt])
    run = load_run(FLAGS.workdir, config=config)
    generator = run.generator(sampler, negative_text[0], negative_mask[0], size)
    return generator(run.params, text, text_mask), f"step {run.step}"


def from_prx(prompts: list[str]) -> tuple[np.ndarray, str]:
    from t2ijax.config import mount_instruction
    from t2ijax.interop import load_prx_pipeline

    if storage.is_url(storage.resolve(FLAGS.prx)):
        raise ConfigError(f"--prx={FLAGS.prx}: a pipeline's weights are read from local files; "
                          f"{mount_instruction('--prx', FLAGS.prx)}")
    if FLAGS.sampler not in (None, "flow_match_euler"):
        raise ConfigError(f"--sampler={FLAGS.sampler}: a PRX pipeline samples with its scheduler (flow_match_euler)")
    pipe = load_prx_pipeline(FLAGS.prx)
    images = pipe.generate(prompts, *_size(512), steps=FLAGS.steps or 28,
                           guidance=4.0 if FLAGS.guidance is None else FLAGS.guidance,
                           negative_prompt=FLAGS.negative_prompt or "", seed=FLAGS.seed or 0)
    return images, f"PRX pipeline {FLAGS.prx}"


def main(argv):
    del argv
    quiet_libraries()
    host_memory.tune_for_cpu()
    from t2ijax.diffusion.generate import image_grid

    prompts = [p for p in FLAGS.prompt for _ in range(FLAGS.num_per_prompt)]
    try:
        storage.check_bucket(FLAGS.out)
        images, source = from_prx(prompts) if FLAGS.prx else from_run(prompts)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    upscale = FLAGS.upscale or (1 if FLAGS.prx else 4)
    if len(images) == 1:
        out = Image.fromarray(images[0]).resize((images.shape[2] * upscale, images.shape[1] * upscale), Image.NEAREST)
    else:  # each prompt written under its images
        out = Image.fromarray(image_grid(images, captions=prompts, scale=upscale))
    path = storage.resolve(FLAGS.out)
    encoded = io.BytesIO()
    out.save(encoded, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.getvalue())
    print(f"wrote {FLAGS.out} ({len(images)} image(s), {source})")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)


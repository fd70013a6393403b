"""Score a checkpoint of a training run: held-out loss per t bin, compositional accuracy, and
FID / CMMD / DINO-MMD (or offline stand-ins) of its samples against real held-out images.

  python -m t2ijax.evaluate --workdir=workdirs/shapes_tiny [--step=1600] [--prompts=prompts.jsonl] \
      [--metrics=loss_t,composition,fd_random_inception] [--num_samples=256] [--sizes=64x64,32x64] \
      [--sampler=euler --steps=30 --guidance=4 --guidance_interval=0.1,0.8] \
      [--clip_weights=DIR --dinov2_weights=DIR --inception_weights=FILE]

Writes DIR/eval/evaluate_step_<step>.json (or --out) and TensorBoard scalars under
DIR/tensorboard or the run's config.log.tensorboard_dir (prefix evaluate/); DIR may be
gs://BUCKET/PATH. The same flags give the same numbers. Metrics and weights: docs/evaluation.md.
"""
import sys

from absl import app, flags

from t2ijax import host_memory, storage
from t2ijax.cli import quiet_libraries
from t2ijax.errors import ConfigError
from t2ijax.metrics.evaluation import evaluate_checkpoint

flags.DEFINE_string("workdir", None, "A training run's directory (holds config.json and checkpoints/), local or "
                    "gs://BUCKET/PATH.", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_string("prompts", None, "JSON Lines prompt file (default: the first num_samples held-out captions).")
flags.DEFINE_list("metrics", None, "Metrics to compute (default: the run's config.eval.metrics).")
flags.DEFINE_integer("num_samples", None, "Held-out prompts to generate (default: the run's).")
flags.DEFINE_integer("reference_examples", None, "Real held-out images the feature metrics compare against.")
flags.DEFINE_string("sampler", None, "Sampler name (default: the run's config.sampler.name).")
flags.DEFINE_integer("steps", None, "Sampler steps (default: the run's config.sampler.steps).")
flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (default: the run's config.sampler).")
flags.DEFINE_list("guidance_interval", None, "low,high: guidance only for t in [low, high] (default: the run's).")
flags.DEFINE_integer("seed", None, "Seed of the sampling noise and of the loss's t and noise (default: the run's).")
flags.DEFINE_string("inception_weights", None, "FID Inception-v3 .safetensors file.")
flags.DEFINE_string("clip_weights", None, "CLIP ViT-L/14-336 Hugging Face directory.")
flags.DEFINE_string("dinov2_weights", None, "DINOv2 ViT-L/14-reg Hugging Face directory.")
flags.DEFINE_list("sizes", None, "More HEIGHTxWIDTH pixel sizes to evaluate at besides the run's own (default: "
                  "the run's config.eval.sizes); their metrics are prefixed HxW/.")
flags.DEFINE_string("out", None, "Output JSON, local or gs:// (default: WORKDIR/eval/evaluate_step_<step>.json).")
FLAGS = flags.FLAGS

EVAL_FLAGS = ("metrics", "num_samples", "reference_examples", "inception_weights", "clip_weights", "dinov2_weights")
SAMPLER_FLAGS = {"sampler": "name", "steps": "steps", "guidance": "guidance"}  # flag -> config.sampler field


def flag_overrides() -> tuple[dict, dict]:
    """(config.sampler overrides, config.eval overrides) from the command-line flags."""
    sampler = {field: FLAGS[flag].value for flag, field in SAMPLER_FLAGS.items()}
    if FLAGS.guidance_interval is not None:
        sampler["guidance_interval"] = tuple(float(x) for x in FLAGS.guidance_interval)
    overrides = {name: FLAGS[name].value for name in EVAL_FLAGS}
    if FLAGS.sizes is not None:
        try:
            overrides["sizes"] = tuple(tuple(int(side) for side in size.split("x")) for size in FLAGS.sizes)
        except ValueError:
            raise ConfigError(f"--sizes={','.join(FLAGS.sizes)}: give HEIGHTxWIDTH pixel sizes, e.g. 64x64,32x64") from None
    return sampler, overrides


def main(argv):
    quiet_libraries()
    host_memory.tune_for_cpu()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    try:
        sampler, overrides = flag_overrides()
        storage.check_bucket(FLAGS.out or FLAGS.workdir)
        metrics, path = evaluate_checkpoint(FLAGS.workdir, FLAGS.step, FLAGS.prompts, FLAGS.seed, FLAGS.out,
                                            sampler, **overrides)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    for name, value in sorted(metrics.items()):
        if isinstance(value, float):
            print(f"{name:32s} {value:.6g}")
    for name, reason in metrics.get("skipped", {}).items():
        print(f"{name:32s} skipped: {reason}")
    print(f"step {metrics['step']}: wrote {path}")


if __name__ == "__main__":
    app.run(main)

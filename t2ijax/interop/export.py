"""Export a checkpoint of a t2ijax run as a diffusers transformer directory (PRXTransformer2DModel for prx,
PixArtTransformer2DModel for dit_cross, SD3Transformer2DModel for mmdit, FluxTransformer2DModel for flux).

  python -m t2ijax.interop.export --workdir=workdirs/shapes_tiny --out=exported/transformer [--step=1600] [--noema]

Then, in PyTorch: PRXTransformer2DModel.from_pretrained("exported/transformer") (or the backbone's class). The
directory's README.md names the text encoder, its layer and the latent space the transformer was trained on.
"""
import sys

from absl import app, flags

from t2ijax.errors import ConfigError

flags.DEFINE_string("workdir", None, "A training run's directory (holds config.json and checkpoints/), local or "
                    "gs://BUCKET/PATH.", required=True)
flags.DEFINE_string("out", None, "Directory to write (config.json + safetensors), local or gs://.", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_bool("ema", True, "Export the EMA params when the run kept them (--noema: the raw params).")
FLAGS = flags.FLAGS


def main(argv):
    from t2ijax.interop.run_export import export_run

    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    try:
        step, what = export_run(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.ema)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(f"step {step}: wrote the {what} to {FLAGS.out} (its config.json's class loads it with from_pretrained; "
          "README.md names the text encoder and layer it expects)")


if __name__ == "__main__":
    app.run(main)

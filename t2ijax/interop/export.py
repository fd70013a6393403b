"""Export a checkpoint of a t2ijax run as a diffusers PRXTransformer2DModel directory.

  python -m t2ijax.interop.export --workdir=workdirs/shapes_tiny --out=exported/transformer [--step=1600] [--noema]

Then, in PyTorch: PRXTransformer2DModel.from_pretrained("exported/transformer").
"""
import sys

from absl import app, flags

from t2ijax.errors import ConfigError

flags.DEFINE_string("workdir", None, "A training run's directory (holds config.json and checkpoints/).",
                    required=True)
flags.DEFINE_string("out", None, "Directory to write (config.json + safetensors).", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_bool("ema", True, "Export the EMA params when the run kept them (--noema: the raw params).")
FLAGS = flags.FLAGS


def export_run(workdir: str, out: str, step: int | None = None, ema: bool = True) -> tuple[int, str]:
    """Writes checkpoint `step` of the run in `workdir` to `out`; returns (step, what was exported)."""
    from t2ijax.interop.diffusers_prx import prx_to_diffusers
    from t2ijax.models.text import text_encoder_from_config
    from t2ijax.restore import load_run_config, restore_run

    config = load_run_config(workdir)
    if config.model.name != "prx":
        raise ConfigError(f"{workdir} trained config.model.name='{config.model.name}'; only prx exports to diffusers")
    text, _ = text_encoder_from_config(config.text_encoder).encode([""])
    run = restore_run(workdir, config, *text.shape[1:], step=step)
    use_ema = ema and run.state.ema_params is not None
    prx_to_diffusers(run.model, run.state.ema_params if use_ema else run.state.params, out)
    return run.step, "EMA params" if use_ema else "params"


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    try:
        step, what = export_run(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.ema)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(f"step {step}: wrote the {what} to {FLAGS.out} (PRXTransformer2DModel.from_pretrained loads it)")


if __name__ == "__main__":
    app.run(main)

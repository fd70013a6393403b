"""A training run's checkpoint as a diffusers transformer directory, with a model card naming its inputs."""
import json

from t2ijax import storage
from t2ijax.errors import ConfigError
from t2ijax.interop.checkpoints import CLASSES, class_of, to_diffusers

EXPORTABLE = tuple(backbone for backbone, _ in CLASSES.values())


def _model_card(config, class_name: str, step: int, what: str) -> str:
    """README.md of an exported run: the inputs its transformer was trained on, which a pipeline must feed it."""
    text, layer = config.text_encoder, config.text_encoder.layer
    hidden = {-1: "last layer's hidden states", 0: "embedding layer's output"}.get(
        layer, f"hidden states after layer {layer}")
    expects = {"text_encoder": {k: text[k] for k in ("name", "path", "tokenizer", "layer", "max_length", "clean")},
               "autoencoder": config.autoencoder.name, "latent_normalization": config.latents.normalization,
               "resolution": config.data.resolution}
    return (f"# {class_name} exported by t2ijax\n\nStep {step} ({what}) of a t2ijax training run.\n\n"
            f"It reads the {hidden} (layer {layer}) of the text encoder `{text.path or text.name}`, at most "
            f"{text.max_length} tokens per caption, and latents of the autoencoder `{config.autoencoder.name}` "
            f"({config.latents.normalization} normalization). A pipeline that feeds it another text encoder, another "
            f"layer or another latent space gets noise.\n\n```json\n{json.dumps(expects, indent=1)}\n```\n")


def export_run(workdir: str, out: str, step: int | None = None, ema: bool = True) -> tuple[int, str]:
    """Writes checkpoint `step` of the run in `workdir` to `out`, with a README.md naming the text encoder, layer
    and latent space its transformer expects; returns (step, what was exported)."""
    from t2ijax.training.restore import load_run, load_run_config

    storage.check_bucket(out)
    config = load_run_config(workdir)
    if config.model.name not in EXPORTABLE:
        raise ConfigError(f"{workdir} trained config.model.name='{config.model.name}', which has no diffusers class; "
                          f"t2ijax exports {', '.join(EXPORTABLE)}")
    run = load_run(workdir, step, config)
    use_ema = ema and run.state.ema_params is not None
    what = "EMA params" if use_ema else "params"
    directory = to_diffusers(run.model, run.state.ema_params if use_ema else run.state.params, out)
    (directory / "README.md").write_text(_model_card(config, class_of(run.model), run.step, what))
    return run.step, what

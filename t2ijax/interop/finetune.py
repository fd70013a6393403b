"""Fine-tuning a released diffusers transformer (PRX, PixArt-alpha, SD3, Flux): config.init_from.

`resolve_init_from` fills the config from the checkpoint before validation (its backbone and architecture
into config.model, its directory into "{init_from}" fields), so the run's config.json describes the model
it trains; `start_from` puts the checkpoint's weights into a freshly initialised train state.
"""
import dataclasses
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from t2ijax import defaults
from t2ijax.config import BACKBONE_FIELDS, check_local_files
from t2ijax.errors import ConfigError
from t2ijax.interop.checkpoints import backbone_of, converter, load_params, local_dir, read_config, transformer_dir
from t2ijax.models.build import pixart_interpolation

PLACEHOLDER = "{init_from}"
PLACEHOLDER_FIELDS = (("text_encoder", "path"), ("text_encoder", "tokenizer"), ("autoencoder", "name"))
# Module fields that are config.model fields of the same name, per backbone. in_channels and context_in_dim are
# not: they follow from the autoencoder and the text encoder, and are checked against them.
COMMON_FIELDS = ("patch_size", "hidden_size", "mlp_ratio", "num_heads", "depth")
MODEL_FIELDS = {
    "prx": (*COMMON_FIELDS, "axes_dim", "theta", "time_factor", "time_max_period", "bottleneck_size"),
    "dit_cross": COMMON_FIELDS,
    "mmdit": (*COMMON_FIELDS, "qk_norm", "pos_embed_max_size"),
    "flux": (*COMMON_FIELDS, "double_blocks", "axes_dim", "theta", "guidance_embeds"),
}


def _placeholders(config: ml_collections.ConfigDict) -> list[str]:
    return [f"config.{s}.{f}" for s, f in PLACEHOLDER_FIELDS if PLACEHOLDER in config[s][f]]


def _as_config_value(default, value):
    if isinstance(default, tuple):
        return tuple(value)
    if isinstance(default, int) and not isinstance(default, bool) and value != int(value):
        raise ConfigError(f"the checkpoint's {value!r} is not an integer")
    return type(default)(value)


def _check_inputs(config: ml_collections.ConfigDict, checkpoint: dict, source: Path) -> None:
    """The checkpoint's input channels and text width against the configured autoencoder and text encoder."""
    from t2ijax.models.autoencoders import geometry
    from t2ijax.models.text.encoder import NO_TEXT
    from t2ijax.models.text.loading import local_model_dir, read_model_config

    channels, _ = geometry(config.autoencoder.name)
    if checkpoint.get("in_channels", 16) != channels:
        raise ConfigError(f"{source} takes {checkpoint.get('in_channels', 16)} input channels but "
                          f"config.autoencoder.name='{config.autoencoder.name}' gives {channels}; use the autoencoder "
                          f"it was trained with (its pipeline's: {PLACEHOLDER}/vae)")
    text = config.text_encoder
    if text.name.lower() == NO_TEXT:
        raise ConfigError(f"{source} is a text-to-image model; config.text_encoder.name='none' would feed it no text")
    model_dir = Path(text.path).expanduser() if text.path else local_model_dir(text.name)
    if model_dir is None:  # a Hub id: checked when the weights load
        return
    width = read_model_config(model_dir)[1].hidden_size
    if checkpoint.get("context_in_dim", 2304) != width:
        raise ConfigError(f"{source} reads text of width {checkpoint.get('context_in_dim', 2304)} but the text "
                          f"encoder in {model_dir} gives {width}; use the encoder it was trained with (its "
                          f"pipeline's: {PLACEHOLDER}/text_encoder)")


def _warn_on_other_shift(diffusion: ml_collections.ConfigDict, root: Path) -> None:
    scheduler = root / "scheduler" / "scheduler_config.json"
    if not scheduler.is_file() or diffusion.shift_mode != "fixed":
        return
    shift = json.loads(scheduler.read_text()).get("shift", 1.0)
    if shift != diffusion.shift:
        logging.warning("%s samples with shift %s; this run trains and samples with config.diffusion.shift=%s "
                        "(set --config.diffusion.shift=%s to keep the released noise levels)", scheduler, shift,
                        diffusion.shift, shift)


def resolve_init_from(config: ml_collections.ConfigDict) -> None:
    """Fills `config` in place from config.init_from (nothing to do when it is empty); idempotent."""
    check_local_files(config)  # before init_from is looked up: a gs:// one is named as such, not sent to the Hub
    if not config.init_from:
        if _placeholders(config):
            raise ConfigError(f"{_placeholders(config)[0]} refers to {PLACEHOLDER} but config.init_from is empty; "
                              "set --config.init_from to a diffusers PRX pipeline directory")
        return
    root = local_dir(config.init_from, whole_pipeline=bool(_placeholders(config)))
    source, class_name = transformer_dir(str(root))
    backbone = backbone_of(class_name)
    module = converter(class_name)
    # A field the class fixes (SD3's and Flux's 4x MLP) is not in config.json: the module's default holds it.
    fields = {**{f.name: f.default for f in dataclasses.fields(module.MODEL)
                 if f.name in MODEL_FIELDS[backbone] and f.default is not None},
              **module.model_fields(read_config(source))}
    pooled = fields.get("pooled_projection_dim", fields["context_in_dim"])
    if pooled != fields["context_in_dim"]:
        raise ConfigError(f"{source} adds a {pooled}-wide pooled text vector (its release's second text encoder) to "
                          "the time embedding, which t2ijax does not compute: it pools the text it reads "
                          f"({fields['context_in_dim']} wide); fine-tune a transformer whose pooled_projection_dim "
                          "equals its text width, or sample this one with from_diffusers(...).apply(..., pooled=)")
    if backbone == "prx":
        _check_prx_positions(config.model)
        fields.setdefault("bottleneck_size", 0)
        config.model.resolution_cond = "vec" if fields.get("resolution_embeds") else "none"
    _set_backbone(config.model, backbone)
    for field in MODEL_FIELDS[backbone]:
        if field in fields:
            try:
                config.model[field] = _as_config_value(config.model[field], fields[field])
            except (ConfigError, TypeError, ValueError) as error:
                raise ConfigError(f"{source}/config.json: {field}={fields[field]!r} does not fit "
                                  f"config.model.{field} ({error})") from None
    if "sample_size" in fields:  # dit_cross, mmdit: their position tables are laid out for this grid
        config.model.pos_grid = fields["sample_size"] // fields["patch_size"]
    if "interpolation_scale" in fields and fields["interpolation_scale"] != pixart_interpolation(fields["sample_size"]):
        raise ConfigError(f"{source}/config.json: interpolation_scale={fields['interpolation_scale']:g} differs from "
                          f"PixArt's default for sample_size {fields['sample_size']} "
                          f"({pixart_interpolation(fields['sample_size']):g}), the only one t2ijax builds")
    for section, field in PLACEHOLDER_FIELDS:
        config[section][field] = config[section][field].replace(PLACEHOLDER, str(root))
    _check_inputs(config, fields, source)
    _warn_on_other_shift(config.diffusion, root)
    logging.info("init_from %s: %s %s", source, backbone, {f: config.model[f] for f in MODEL_FIELDS[backbone]})


def _set_backbone(model: ml_collections.ConfigDict, backbone: str) -> None:
    """config.model.name = `backbone`, with the fields of other backbones back at their defaults."""
    default = defaults.get_config().model
    model.name = backbone
    for field, backbones in BACKBONE_FIELDS.items():
        if backbone not in backbones:
            model[field] = default[field]


def _check_prx_positions(model: ml_collections.ConfigDict) -> None:
    if model.pos_embed == "learned_absolute" or model.resolution_cond == "tokens":
        raise ConfigError("config.model.pos_embed=learned_absolute and resolution_cond=tokens add parameters a PRX "
                          "checkpoint does not have; fine-tune with pos_embed rope_2d or rope_2d_normalized, "
                          "resolution_cond none (it follows the checkpoint's resolution_embeds)")


def start_from(init_from: str, state, model, optimizer, shardings):
    """`state` (just initialised) with the checkpoint's weights as params (and EMA) and a fresh optimizer state."""
    source, class_name = transformer_dir(init_from)
    weights = load_params(source, class_name, model)
    weights = jax.tree.map(lambda w, like: np.asarray(w, like.dtype), weights, state.params)

    def placed():  # every host holds all weights and gives each of its devices its shard
        return jax.tree.map(lambda w, sharding: jax.make_array_from_callback(w.shape, sharding, w.__getitem__),
                            weights, shardings.params)

    params = placed()
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
    logging.info("params initialised from %s", source)
    return state.replace(params=params, opt_state=opt_state, ema_params=None if state.ema_params is None else placed())

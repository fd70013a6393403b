"""Config validation: every check that can fail before compute, each a one-line error; and config
files loaded by path.

Importing this module imports only the schema (t2ijax/defaults.py), the declared names of every
axis (t2ijax/registry.py) and the errors: checks that need an implementation's code (a dataset
listing, an autoencoder's geometry, a path's coefficients) import it inside the check, when
`validate` runs (tests/test_config_imports.py holds that boundary).
"""
import difflib
import importlib.util
import math
import os
import sys
from pathlib import Path

import ml_collections
from absl import logging

from t2ijax import defaults as base
from t2ijax.errors import ConfigError
from t2ijax.registry import NAMES, OPEN_FIELDS


def _choices() -> dict[str, tuple[str, ...]]:
    """Fields whose value must be one of a fixed set of names (t2ijax/registry.py declares them)."""
    return {field: allowed for field, allowed in NAMES.items() if field not in OPEN_FIELDS}


# SD3's mode sampling maps [0, 1] onto itself monotonically only for scales in this range.
_MODE_SCALE_RANGE = (-1.0, 2.0 / (math.pi - 2.0))


def configs_importable(config_path: str) -> None:
    """Makes the `configs/` directory that holds `config_path` ("path[:variant]", as --config takes
    it) importable as the package `configs`, so that config files import their siblings
    (`from configs import shapes_tiny`) from any working directory; configs/ is data kept next to
    the code, not an installed package. No-op for a file outside a `configs/` directory, or once a
    `configs` package is imported."""
    directory = os.path.dirname(os.path.abspath(config_path.split(":", 1)[0]))  # config files are local Python
    while os.path.basename(directory) != "configs":
        if directory == os.path.dirname(directory):
            return
        directory = os.path.dirname(directory)
    if "configs" in sys.modules or not os.path.isfile(os.path.join(directory, "__init__.py")):
        return
    spec = importlib.util.spec_from_file_location("configs", os.path.join(directory, "__init__.py"),
                                                  submodule_search_locations=[directory])
    module = importlib.util.module_from_spec(spec)
    sys.modules["configs"] = module
    spec.loader.exec_module(module)


def load_config(config_path: str) -> ml_collections.ConfigDict:
    """The config of file `config_path` ("path[:argument]"): its `get_config()`, or
    `get_config(argument)` after a colon (an ablation variant), as --config=path[:argument] reads
    it. Loads from any working directory (see `configs_importable`); validates nothing."""
    path, _, argument = config_path.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} not found")
    configs_importable(path)
    name = "t2ijax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(argument) if argument else module.get_config()


def flatten(cfg, prefix: str = "") -> dict:
    """Leaves of a (nested) config as dotted name -> value; config.sharding_rules stays one leaf."""
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)) and name != "sharding_rules":
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict, source: str) -> None:
    """Sets dotted fields ({"diffusion.path": "vp_cosine"}) in place; `source` names them in errors.
    A leaf name configs/base.py lacks is left for `validate` to name."""
    try:
        cfg.update_from_flattened_dict(overrides)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{source}: {str(e).strip(chr(39))}") from None


def _check_known(name: str, schema: dict) -> None:
    if name not in schema:
        hint = difflib.get_close_matches(name, list(schema), n=1)
        raise ConfigError(f"config.{name} is not a config field"
                          + (f"; did you mean config.{hint[0]}?" if hint else "; see configs/base.py"))


def _check_keys_and_types(flat: dict, schema: dict) -> None:
    for name, value in flat.items():
        if name.startswith("sharding_rules"):
            continue
        _check_known(name, schema)
        default = schema[name]
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
            raise ConfigError(f"config.{name}={value!r} must be a number (default {default!r})")
        if isinstance(default, (str, bool)) and type(value) is not type(default):
            raise ConfigError(f"config.{name}={value!r} must be a {type(default).__name__} (default {default!r})")


def allowed_names() -> dict[str, list[str]]:
    """Field -> the names it accepts, as t2ijax/registry.py declares them (docs/configuration.md
    lists them)."""
    return {name: list(allowed) for name, allowed in _choices().items()}


def _check_choice(name: str, value) -> None:
    allowed = _choices()[name]
    if value not in allowed:
        raise ConfigError(f"config.{name}='{value}' is not one of: {', '.join(allowed)}")


def _check_choices(flat: dict) -> None:
    for name in _choices().keys() & flat.keys():
        _check_choice(name, flat[name])


def _check_positive(section: str, cfg: ml_collections.ConfigDict, names: tuple[str, ...]) -> None:
    for name in names:
        if not cfg[name] > 0:  # NaN too
            raise ConfigError(f"config.{section}.{name}={cfg[name]} must be positive")


# config.model fields that only some backbones read; every other model field applies to all of them.
BACKBONE_FIELDS = {
    "bottleneck_size": ("prx",), "theta": ("prx", "flux"), "axes_dim": ("prx", "flux"), "time_factor": ("prx",),
    "time_max_period": ("prx",), "pos_embed": ("prx",), "resolution_cond": ("prx",), "qk_norm": ("mmdit",), "pos_embed_max_size": ("mmdit",),
    "double_blocks": ("flux",), "guidance_embeds": ("flux",), "final_conv": ("uvit",),
}


def _check_backbone_fields(m: ml_collections.ConfigDict) -> None:
    defaults = base.get_config().model
    for field, backbones in BACKBONE_FIELDS.items():
        if m.name not in backbones and m[field] != defaults[field]:
            raise ConfigError(f"config.model.{field}={m[field]!r} applies to {' and '.join(backbones)} only, not to "
                              f"config.model.name='{m.name}'; leave it at {defaults[field]!r} or pick "
                              f"{'that backbone' if len(backbones) == 1 else 'one of those backbones'}")


def _check_model(cfg: ml_collections.ConfigDict) -> None:
    m = cfg.model
    _check_backbone_fields(m)
    if m.hidden_size % m.num_heads:
        raise ConfigError(f"config.model.hidden_size={m.hidden_size} is not divisible by "
                          f"config.model.num_heads={m.num_heads}")
    if m.name == "prx" and (m.hidden_size // m.num_heads) % 4:
        raise ConfigError(f"head dim {m.hidden_size // m.num_heads} (hidden_size / num_heads) must be a "
                          "multiple of 4 for 2D RoPE; change config.model.hidden_size or num_heads")
    head_dim = m.hidden_size // m.num_heads
    rope_axes = {"prx": 2, "flux": 3}.get(m.name)
    if rope_axes and m.axes_dim and (len(m.axes_dim) != rope_axes or sum(m.axes_dim) != head_dim
                                     or any(d % 2 for d in m.axes_dim)):
        raise ConfigError(f"config.model.axes_dim={tuple(m.axes_dim)} must be {rope_axes} even sizes summing to the "
                          f"head dim {head_dim} for {m.name}'s RoPE; () splits it evenly")
    if m.guidance_embeds:
        raise ConfigError("config.model.guidance_embeds=True is Flux.1-dev's distilled guidance input, which needs a "
                          "guidance-distillation objective t2ijax does not train; start from a checkpoint without it "
                          "(Flux.1-schnell's kind) or set model.guidance_embeds=False")
    if m.name == "flux" and not 0 <= m.double_blocks <= m.depth:
        raise ConfigError(f"config.model.double_blocks={m.double_blocks} must be in 0..model.depth={m.depth} (0: a "
                          "third of the blocks, rounded up)")
    if m.pos_grid < 0:
        raise ConfigError(f"config.model.pos_grid={m.pos_grid} must be >= 0 (0: the token grid side of "
                          "config.data.resolution)")
    if cfg.data.resolution % m.patch_size:
        raise ConfigError(f"config.data.resolution={cfg.data.resolution} is not divisible by "
                          f"config.model.patch_size={m.patch_size}")
    for name in ("total_steps", "data.global_batch_size", "model.depth", "text_encoder.max_length",
                 "checkpoint.every_steps", "checkpoint.keep", "log.every_steps"):
        if flatten(cfg)[name] <= 0:
            raise ConfigError(f"config.{name} must be positive")
    if not 0.0 <= cfg.data.caption_dropout < 1.0:
        raise ConfigError(f"config.data.caption_dropout={cfg.data.caption_dropout} must be in [0, 1)")
    if not 0.0 <= cfg.ema.decay < 1.0:
        raise ConfigError(f"config.ema.decay={cfg.ema.decay} must be in [0, 1) (0 turns the EMA off)")
    if cfg.ema.every_steps < 1 or cfg.ema.start_step < 0:
        raise ConfigError("config.ema.every_steps must be >= 1 and config.ema.start_step >= 0")


def _check_optim(optim: ml_collections.ConfigDict) -> None:
    """Values with which an update cannot stay finite are refused here, not met as NaN weights later."""
    _check_positive("optim", optim, ("learning_rate", "muon_learning_rate", "muon_ns_steps", "muon_update_rms"))
    if not (math.isfinite(optim.eps) and optim.eps > 0):
        # Adam divides by sqrt(v) + eps, and v stays 0 for a parameter whose gradient is 0 (the zero-initialised
        # output layers at step 1): eps = 0 makes their update 0 / 0.
        raise ConfigError(f"config.optim.eps={optim.eps} must be positive: Adam's update of a parameter whose "
                          "gradient is 0 is then 0 / 0; use e.g. 1e-15 (PRX) or 1e-8")
    for name in ("b1", "b2"):
        if not 0.0 <= optim[name] < 1.0:
            raise ConfigError(f"config.optim.{name}={optim[name]} must be in [0, 1)")
    for name in ("weight_decay", "grad_clip_norm", "muon_weight_decay", "warmup_steps"):
        if not optim[name] >= 0:
            raise ConfigError(f"config.optim.{name}={optim[name]} must be >= 0")
    if not 0.0 <= optim.muon_momentum < 1.0:
        raise ConfigError(f"config.optim.muon_momentum={optim.muon_momentum} must be in [0, 1)")


def _check_data(data: ml_collections.ConfigDict) -> None:
    """A user dataset's files are listed (not decoded) here: a wrong path or column fails before any compute."""
    from t2ijax.data.augmentation import check_augmentation
    from t2ijax.data.captions import check_caption_weights
    from t2ijax.data.sources import USER_FORMATS, user_source
    from t2ijax.data.user_data import check_split, listing

    check_caption_weights(data.captions)
    check_augmentation(data)
    if not isinstance(data.beam_runner, str):
        raise ConfigError(f"config.data.beam_runner={data.beam_runner!r} must be a Beam runner's name, e.g. "
                          "DirectRunner, or \"\" to build in this process")
    if data.beam_workers < 1:
        raise ConfigError(f"config.data.beam_workers={data.beam_workers} must be at least 1 (DirectRunner processes)")
    if not all(isinstance(o, str) and o.startswith("--") for o in data.beam_options):
        raise ConfigError(f"config.data.beam_options={tuple(data.beam_options)!r} must be pipeline option strings "
                          "such as \"--project=P\"")
    if data.name in USER_FORMATS:
        if data.build_chunk < 1:
            raise ConfigError(f"config.data.build_chunk={data.build_chunk} must be a positive number of entries, "
                              "e.g. 1000")
        if data.max_pixels < data.resolution**2:
            raise ConfigError(f"config.data.max_pixels={data.max_pixels} is below data.resolution**2="
                              f"{data.resolution**2}: every image would be skipped as too_large; raise it")
        if data.path and Path(data.data_dir).resolve().is_relative_to(Path(data.path).expanduser().resolve()):
            raise ConfigError(f"config.data.data_dir='{data.data_dir}' lies inside config.data.path='{data.path}': "
                              "each build would change the files it is keyed on; put data_dir elsewhere")
        if not data.records:  # training on given records never reads the source
            check_split(listing(user_source(data)), data.num_validation, data.name)
    elif data.path:
        raise ConfigError(f"config.data.path='{data.path}' is read by the user data formats only "
                          f"({', '.join(USER_FORMATS)}); clear it, or set config.data.name to one of them")


def check_local_files(cfg: ml_collections.ConfigDict) -> None:
    """The fields that name files (defaults.LOCAL_PATHS, NAMES_OR_PATHS) hold local paths: TFDS builds, the numpy
    caches, tar offsets, safetensors' memory maps and Hugging Face directories open local files only, so a
    gs:// URL there is a one-line error that says to mount the bucket (docs/launch.md)."""
    flat = flatten(cfg)
    for field in (*base.LOCAL_PATHS, *base.NAMES_OR_PATHS):
        value = flat.get(field)
        if not (isinstance(value, str) and "://" in value):
            continue
        what = {"data.data_dir": "dataset builds and caches are local files",
                "data.path": "datasets are read from local files",
                "data.records": "records are read and written as local ArrayRecord files"}.get(
                    field, "weights are read from local files")
        if not value.startswith("gs://"):
            raise ConfigError(f"config.{field}={value}: {what}; pass a local path")
        raise ConfigError(f"config.{field}={value}: {what}; {mount_instruction(f'--config.{field}', value)}")


def mount_instruction(flag: str, url: str) -> str:
    """What to do instead of passing gs://BUCKET/PATH to `flag`, which takes local paths only."""
    bucket, _, rest = url.removeprefix("gs://").partition("/")
    return (f"mount the bucket with gcsfuse (launch/tpu_vm.sh mount --bucket={bucket} mounts it at /mnt/{bucket}) and "
            f"pass {flag}={f'/mnt/{bucket}/{rest}'.rstrip('/')}")


def _check_resolution(cfg: ml_collections.ConfigDict) -> None:
    from t2ijax.data.buckets import check_buckets
    from t2ijax.models.build import pixel_multiple
    from t2ijax.training.phases import check_phases

    check_buckets(cfg)
    check_phases(cfg, pixel_multiple(cfg))


def _check_latents(cfg: ml_collections.ConfigDict) -> None:
    """The autoencoder exists and its latent grid fits the denoiser's patches; statistics need latents."""
    from t2ijax.models.autoencoders import PIXEL_SPACE, check_autoencoder_name, geometry
    from t2ijax.models.autoencoders.normalization import NEEDS_STATISTICS

    check_autoencoder_name(cfg.autoencoder.name)
    _check_positive("latents", cfg.latents, ("stats_examples", "encode_batch_size"))
    if cfg.autoencoder.name == PIXEL_SPACE and cfg.latents.normalization in NEEDS_STATISTICS:
        raise ConfigError(f"config.latents.normalization='{cfg.latents.normalization}' needs an autoencoder's latents; "
                          f"pixel space is already in [-1, 1]: use none or config_factors")
    _, downsample = geometry(cfg.autoencoder.name)
    side = cfg.data.resolution / downsample
    if side != int(side) or int(side) % cfg.model.patch_size:
        raise ConfigError(f"config.data.resolution={cfg.data.resolution} / the autoencoder's downsampling {downsample} "
                          f"= {side:g} latent pixels, not a multiple of config.model.patch_size={cfg.model.patch_size}")


def _check_autoencoder_training(t: ml_collections.ConfigDict) -> None:
    _check_positive("autoencoder_training", t, ("layers_per_block", "latent_channels", "norm_num_groups", "steps",
                                                "batch_size", "learning_rate"))
    widths = t.block_out_channels
    if not widths or any(not isinstance(w, int) or w <= 0 or w % t.norm_num_groups for w in widths):
        raise ConfigError(f"config.autoencoder_training.block_out_channels={tuple(widths)} must be positive multiples "
                          f"of norm_num_groups={t.norm_num_groups}")
    if t.kl_weight < 0:
        raise ConfigError(f"config.autoencoder_training.kl_weight={t.kl_weight} must be >= 0")


def _check_eval(cfg: ml_collections.ConfigDict) -> None:
    from t2ijax.models.build import pixel_multiple

    metrics, known = cfg.eval.metrics, NAMES["eval.metrics"]
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise ConfigError(f"config.eval.metrics={metrics!r} must be a tuple of metric names, e.g. ('loss_t', 'fid')")
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ConfigError(f"config.eval.metrics names '{unknown[0]}'; metrics are: "
                          f"{', '.join(known)}")
    for name in ("num_samples", "batch_size"):
        if cfg.eval[name] < 1:
            raise ConfigError(f"config.eval.{name}={cfg.eval[name]} must be at least 1")
    multiple = pixel_multiple(cfg)
    for size in cfg.eval.sizes:
        if len(size) != 2 or min(size) <= 0 or size[0] % multiple or size[1] % multiple:
            raise ConfigError(f"config.eval.sizes entry {tuple(size)} must be (height, width) in pixels, both "
                              f"positive multiples of {multiple} (patch_size x the autoencoder's downsample)")


def _check_text(text: ml_collections.ConfigDict, shapes_only: bool = False) -> None:
    """The encoder's own directory (config.json, weights, tokenizer; config.json alone when `shapes_only`) is read
    here, not loaded."""
    from t2ijax.models.text.encoder import NO_TEXT
    from t2ijax.models.text.loading import check_model_dir, local_model_dir

    if not text.name:
        raise ConfigError("config.text_encoder.name is empty; name the encoder (it labels config.text_encoder.path "
                          "when that is set), or 'none' for no text")
    if text.name.lower() == NO_TEXT and text.init != "pretrained":
        raise ConfigError(f"config.text_encoder.init='{text.init}' has no meaning with config.text_encoder.name='none' "
                          "(there is no encoder); leave it 'pretrained'")
    if text.name.lower() == NO_TEXT and text.path:
        raise ConfigError(f"config.text_encoder.path='{text.path}' is set but config.text_encoder.name='none' "
                          "(no text); clear the path, or name the encoder it holds")
    if text.path and not Path(text.path).expanduser().is_dir():
        raise ConfigError(f"config.text_encoder.path='{text.path}' is not a directory; give a local Hugging "
                          "Face-format directory (config.json, *.safetensors, tokenizer files)")
    if text.tokenizer and not Path(text.tokenizer).expanduser().is_dir():
        raise ConfigError(f"config.text_encoder.tokenizer='{text.tokenizer}' is not a directory; give the directory "
                          "holding the tokenizer files, or leave it empty to use the model's own")
    if text.name.lower() != NO_TEXT:
        model_dir = Path(text.path).expanduser() if text.path else local_model_dir(text.name)
        if model_dir is not None:  # a Hub id is checked once downloaded, when it loads
            check_model_dir(model_dir, init=text.init, layer=text.layer, max_length=text.max_length,
                            tokenizer_dir=Path(text.tokenizer).expanduser() if text.tokenizer else None,
                            shapes_only=shapes_only)


def check_diffusion(d: ml_collections.ConfigDict) -> None:
    """Ranges of the formulation's numbers, and combinations that cannot work."""
    from t2ijax.diffusion.parameterization import PREDICTIONS
    from t2ijax.diffusion.paths import make_path

    _check_positive("diffusion", d, ("logit_std", "shift", "discrete_steps", "min_snr_gamma", "edm_sigma_data"))
    if not 0.0 <= d.uniform_fraction <= 1.0:
        raise ConfigError(f"config.diffusion.uniform_fraction={d.uniform_fraction} must be in [0, 1]")
    if not 0.0 <= d.t_min < 1.0:
        raise ConfigError(f"config.diffusion.t_min={d.t_min} must be in [0, 1)")
    low, high = _MODE_SCALE_RANGE
    if not low <= d.mode_scale <= high:
        raise ConfigError(f"config.diffusion.mode_scale={d.mode_scale} must be in [{low}, {high:.3f}], where SD3's "
                          "mode sampling is monotone")
    if d.base_tokens == d.max_tokens:
        raise ConfigError(f"config.diffusion.base_tokens and max_tokens are both {d.base_tokens}; the resolution "
                          "shift needs two token counts")
    noise = make_path(d).at(1.0)
    able = [name for name in PREDICTIONS.names() if abs(float(PREDICTIONS.get(name).det(noise))) > 1e-6]
    if d.prediction not in able:
        raise ConfigError(f"config.diffusion.prediction='{d.prediction}' cannot give x0 at t = 1 on "
                          f"config.diffusion.path='{d.path}', which keeps no signal there; use one of: {', '.join(able)}")


def check_sampler(sampler: ml_collections.ConfigDict, diffusion: ml_collections.ConfigDict) -> None:
    """config.sampler against the run's formulation (also used by t2ijax.sample for its overrides)."""
    from t2ijax.diffusion.paths import make_path
    from t2ijax.diffusion.samplers import SAMPLERS

    _check_choice("sampler.name", sampler.name)
    _check_positive("sampler", sampler, ("steps",))
    interval = sampler.guidance_interval
    if not (len(interval) == 2 and all(isinstance(x, (int, float)) for x in interval)
            and 0.0 <= interval[0] <= interval[1] <= 1.0):
        raise ConfigError(f"config.sampler.guidance_interval={tuple(interval)} must be (low, high) with "
                          "0 <= low <= high <= 1")
    if SAMPLERS.get(sampler.name).vp_only and not make_path(diffusion).variance_preserving:
        raise ConfigError(f"config.sampler.name='{sampler.name}' needs a variance-preserving "
                          f"config.diffusion.path, not '{diffusion.path}', where its even steps in t are euler's; "
                          "use euler")


def _check_mesh(cfg: ml_collections.ConfigDict, num_devices: int, num_processes: int, num_slices: int) -> None:
    from t2ijax.sharding import BATCH_AXES, MESH_AXES, hybrid_shape

    unknown_axes = sorted({a for axes in cfg.sharding_rules.values() for a in axes} - set(MESH_AXES))
    if unknown_axes:
        raise ConfigError(f"config.sharding_rules name mesh axes {unknown_axes}; mesh axes are {MESH_AXES}")
    if num_processes > 1 and num_processes % num_slices:
        raise ConfigError(f"{num_processes} processes cannot be shared out over {num_slices} slices (each host "
                          "belongs to one slice); use a process count that is a multiple of the slice count")
    ici, dcn = hybrid_shape(cfg.mesh, cfg.dcn_mesh, num_devices, num_slices)
    shape = {axis: within * across for axis, within, across in zip(MESH_AXES, ici, dcn)}
    _check_model_split(cfg, shape)
    data_parallel = shape["data"] * shape["fsdp"]
    if data_parallel % num_processes:
        raise ConfigError(f"the batch is split {data_parallel} ways ({' x '.join(BATCH_AXES)}) over {num_processes} "
                          f"processes, so some process would feed another's devices; make data x fsdp a multiple of "
                          f"{num_processes} (keep the tensor axis within a host)")
    batches = {"config.data.global_batch_size": cfg.data.global_batch_size,
               **{f"config.resolution.phases[{i}]'s global_batch_size": phase[1]
                  for i, phase in enumerate(cfg.resolution.phases)}}
    for name, batch in batches.items():
        if batch % data_parallel:
            per_host = f" (nor into a whole per-host batch over {num_processes} processes)" if batch % num_processes else ""
            raise ConfigError(f"{name}={batch} is not divisible by the data-parallel size {data_parallel} "
                              f"({' x '.join(BATCH_AXES)}){per_host}; use a multiple of {data_parallel}")


def _check_model_split(cfg: ml_collections.ConfigDict, shape: dict[str, int]) -> None:
    """Each model dimension splits evenly over the mesh axes its logical axis maps to (config.sharding_rules)."""
    m = cfg.model
    dims = (("heads", "config.model.num_heads", m.num_heads),
            ("embed", "config.model.hidden_size", m.hidden_size),
            ("mlp", "the MLP width (hidden_size x mlp_ratio)", int(m.hidden_size * m.mlp_ratio)),
            ("mlp", "config.model.hidden_size (the time embedding MLP)", m.hidden_size))
    for logical, what, size in dims:
        axes = tuple(cfg.sharding_rules.get(logical, ()))
        ways = math.prod(shape[a] for a in axes)
        if size % ways:
            fits = [str(d) for d in range(1, size + 1) if size % d == 0]
            raise ConfigError(f"{what}={size} cannot be split {ways} ways over mesh axes {' x '.join(axes)} "
                              f"(config.sharding_rules.{logical}); use sizes whose product divides {size}: "
                              f"{', '.join(fits[:12])}{', ...' if len(fits) > 12 else ''}")


def check_overrides(argv: list[str]) -> None:
    """Rejects command-line overrides (--config.a.b=value) of fields configs/base.py does not define."""
    schema = flatten(base.get_config())
    for arg in argv:
        if arg.startswith("--config."):
            name = arg[len("--config."):].split("=", 1)[0]
            if not name.startswith("sharding_rules."):
                _check_known(name, schema)


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def override_type_message(name: str, value: str) -> str | None:
    """The one-line error for an override --config.<name>=<value> whose value does not parse as the field's
    type ('config.total_steps takes an integer, e.g. 10000', the example its default); None for a field
    configs/base.py lacks."""
    schema = flatten(base.get_config())
    if name not in schema:
        return None
    default = schema[name]
    kind = _KINDS.get(type(default), f"a {type(default).__name__}")
    example = str(default).lower() if isinstance(default, bool) else repr(default)
    return f"--config.{name}={value}: config.{name} takes {kind}, e.g. {example}"


def warn_unreached_warmup(cfg: ml_collections.ConfigDict) -> None:
    """Warns when the run ends before its learning-rate warmup does (a short run of a long-run config)."""
    total, warmup = cfg.total_steps, cfg.optim.warmup_steps
    if total <= warmup:
        logging.warning("config.total_steps=%d <= config.optim.warmup_steps=%d: the run never leaves warmup, its "
                        "learning rate never reaches config.optim.learning_rate; lower the warmup too, e.g. "
                        "--config.optim.warmup_steps=%d", total, warmup, total // 10)


def validate_eval(cfg: ml_collections.ConfigDict) -> None:
    """The checks evaluating a trained run needs (its training mesh need not fit this machine)."""
    flat = flatten(cfg.eval, "eval.")
    _check_keys_and_types(flat, flatten(base.get_config()))
    _check_choices(flat)
    check_local_files(cfg)
    _check_eval(cfg)


def token_grid(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
    """The denoiser's image token grid (rows, columns)."""
    from t2ijax.models.autoencoders import geometry

    _, downsample = geometry(cfg.autoencoder.name)
    side = cfg.data.resolution // downsample // cfg.model.patch_size
    return side, side


def _check_routing(cfg: ml_collections.ConfigDict) -> None:
    r, depth = cfg.routing, cfg.model.depth
    if cfg.sampler.weak_branch == "routed" and r.method != "tread":
        raise ConfigError("config.sampler.weak_branch='routed' guides with the routed model and needs "
                          "routing.method='tread'; use weak_branch='unconditional'")
    if r.method == "none":
        return
    if cfg.model.name == "uvit":
        raise ConfigError(f"config.routing.method='{r.method}' sends image tokens past blocks {r.start}..{r.end}, which "
                          "U-ViT's long skip connections (in-block i feeds out-block depth-1-i) cannot take: "
                          "config.model.name='uvit' trains without routing; set routing.method='none'")
    if not 0 <= r.start <= r.end < depth:
        raise ConfigError(f"config.routing blocks {r.start}..{r.end} are not inside the model's {depth} blocks; "
                          f"set 0 <= routing.start <= routing.end < model.depth")
    if not 0.0 < r.rate < 1.0:
        raise ConfigError(f"config.routing.rate={r.rate} must be inside (0, 1): the share of tokens routed past the range")


def _check_repa(cfg: ml_collections.ConfigDict) -> None:
    repa, r = cfg.repa, cfg.routing
    if repa.weight < 0 or repa.stop_step < 0:
        raise ConfigError("config.repa.weight and config.repa.stop_step must be >= 0")
    if repa.weight == 0:
        return
    if not 0 <= repa.layer < cfg.model.depth:
        raise ConfigError(f"config.repa.layer={repa.layer} is beyond the model's {cfg.model.depth} blocks; "
                          f"use 0..{cfg.model.depth - 1}")
    if repa.projector == "conv" and r.method != "none" and r.start <= repa.layer <= r.end:
        raise ConfigError(f"config.repa.layer={repa.layer} is inside the routed blocks {r.start}..{r.end}, where tokens "
                          f"are missing and a conv projector has no grid; use repa.projector='attention' or another layer")
    if repa.projector == "attention" and cfg.model.hidden_size % repa.attention_heads:
        raise ConfigError(f"config.repa.attention_heads={repa.attention_heads} does not divide model.hidden_size="
                          f"{cfg.model.hidden_size}")


def _check_batch_split(cfg: ml_collections.ConfigDict) -> None:
    micro = cfg.optim.microbatches
    if micro < 1 or cfg.data.global_batch_size % micro:
        raise ConfigError(f"config.optim.microbatches={micro} must be >= 1 and divide data.global_batch_size="
                          f"{cfg.data.global_batch_size}")
    if cfg.contrastive.weight < 0:
        raise ConfigError("config.contrastive.weight must be >= 0")
    if cfg.contrastive.weight > 0 and cfg.data.global_batch_size < 2:  # pairs span microbatches (train_step)
        raise ConfigError("config.contrastive needs at least 2 examples in data.global_batch_size to pair them; "
                          "raise data.global_batch_size or set contrastive.weight=0")


def _check_techniques(cfg: ml_collections.ConfigDict) -> None:
    from t2ijax.techniques.perceptual import check_perceptual, dino_grid
    from t2ijax.techniques.teachers import check_teacher

    _check_routing(cfg)
    _check_repa(cfg)
    _check_batch_split(cfg)
    check_perceptual(cfg.perceptual)
    # each enabled technique that reads the teacher -> the feature grid it asks for
    uses = {"config.perceptual.dino_weight": dino_grid(cfg.perceptual, token_grid(cfg)),
            "config.repa.weight": token_grid(cfg) if cfg.repa.weight > 0 else None}
    check_teacher(cfg.teacher, cfg.data.resolution, {field: grid for field, grid in uses.items() if grid})


def _check_attention(cfg: ml_collections.ConfigDict, platform: str | None) -> None:
    """`platform` None: only what holds on any backend."""
    from t2ijax.models.build import JOINT_SEQUENCE, attention_mismatch, splash_misfit

    impl = cfg.model.attention_impl
    misfit = splash_misfit(cfg) if impl == "splash" else None
    if misfit:
        height, width, tokens = misfit
        joint = " (image and text tokens: its attention is joint)" if cfg.model.name in JOINT_SEQUENCE else ""
        raise ConfigError(f"config.model.attention_impl='splash' needs a multiple of 128 query tokens, this "
                          f"config trains at {height}x{width} px with {tokens}{joint}; use xla, or sizes "
                          "(resolution, buckets, phases, text_encoder.max_length) giving 128, 256, 1024, ...")
    wrong = platform and attention_mismatch(impl, platform)
    if wrong:
        raise ConfigError(f"{wrong}; use xla")


def _check_compile_and_profile(cfg: ml_collections.ConfigDict, num_processes: int) -> None:
    if cfg.compile.threads < 0:
        raise ConfigError(f"config.compile.threads={cfg.compile.threads} must be >= 0 (0: one per CPU core)")
    p = cfg.profile
    if p.start_step < -1 or p.steps < 1:
        raise ConfigError(f"config.profile.start_step={p.start_step} and steps={p.steps} must be >= -1 (-1: no "
                          "trace) and >= 1")
    if p.start_step >= cfg.total_steps:
        raise ConfigError(f"config.profile.start_step={p.start_step} is never reached: the run ends at "
                          f"total_steps={cfg.total_steps}; profile an earlier step")
    hosts = tuple(p.hosts)
    if not all(isinstance(h, int) and 0 <= h < num_processes for h in hosts):
        raise ConfigError(f"config.profile.hosts={hosts} must be process indices in 0..{num_processes - 1}, or () "
                          "for every process")


def _check_tensorboard_dir(log: ml_collections.ConfigDict) -> None:
    from t2ijax import storage

    try:
        storage.resolve(log.tensorboard_dir)
    except ConfigError as e:
        raise ConfigError(f"config.log.tensorboard_dir: {e}") from None


def validate(cfg: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1,
             platform: str | None = None, num_slices: int = 1, shapes_only: bool = False) -> None:
    """Raises ConfigError (one line) for the first problem found; returns None if none. `platform`
    (jax.default_backend()) also checks the choices that need a particular backend; `num_slices` is the
    devices' slice count (multislice TPU: sharding.device_slices); `shapes_only` (t2ijax.plan, which loads
    nothing) asks only config.json of the text encoder's directory, not its tokenizer and weights."""
    from t2ijax.sharding import check_distributed  # sharding imports this module's neighbours

    flat = flatten(cfg)
    _check_keys_and_types(flat, flatten(base.get_config()))
    missing = sorted(set(flatten(base.get_config())) - set(flat))
    if missing:
        raise ConfigError(f"config.{missing[0]} is missing; start configs from configs/base.py")
    _check_choices(flat)
    _check_model(cfg)
    _check_optim(cfg.optim)
    check_local_files(cfg)
    _check_data(cfg.data)
    _check_latents(cfg)
    _check_resolution(cfg)
    _check_autoencoder_training(cfg.autoencoder_training)
    _check_eval(cfg)
    _check_text(cfg.text_encoder, shapes_only)
    check_diffusion(cfg.diffusion)
    check_sampler(cfg.sampler, cfg.diffusion)
    _check_techniques(cfg)
    _check_compile_and_profile(cfg, num_processes)
    _check_tensorboard_dir(cfg.log)
    check_distributed(cfg.distributed)
    _check_mesh(cfg, num_devices, num_processes, num_slices)
    _check_attention(cfg, platform)

"""A training run brought back for inference: its config, model and checkpointed parameters.

`load_run` is the public entry (`t2ijax.load_run`); the CLIs that read a run directory
(`t2ijax.sample`, `t2ijax.evaluate`, `t2ijax.interop.export`) go through it.
"""
import dataclasses
import json
import os

import ml_collections

from t2ijax import defaults as base
from t2ijax import storage
from t2ijax.defaults import LOCAL_PATHS, NAMES_OR_PATHS
from t2ijax.errors import ConfigError


def with_resolved_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` whose local paths are absolute, relative ones taken from the working directory (after
    `finetune.resolve_init_from`). URLs ("gs://...") and names that are no local path stay as they are."""
    config = ml_collections.ConfigDict(config.to_dict())
    for field in (*LOCAL_PATHS, *NAMES_OR_PATHS):
        section, _, name = field.rpartition(".")
        holder = config[section] if section else config
        value = holder[name]
        if not value or storage.is_url(value):
            continue
        path = storage.resolve(value)
        if field in LOCAL_PATHS or path.exists():
            holder[name] = os.fspath(path)
    return config


def _with_defaults(values: dict, defaults: dict) -> dict:
    """`values` plus every field of `defaults` it lacks, at any depth."""
    merged = dict(values)
    for key, default in defaults.items():
        if key not in merged:
            merged[key] = default
        elif isinstance(default, dict) and isinstance(merged[key], dict) and key != "sharding_rules":
            merged[key] = _with_defaults(merged[key], default)
    return merged


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was trained with (its config.json, on disk or in a gs:// bucket); fields added to
    t2ijax/defaults.py since take their defaults, and local paths are absolute (a relative one taken from
    the working directory)."""
    storage.check_bucket(workdir)
    path = storage.resolve(workdir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{path} not found; --workdir must be a t2ijax training run")
    saved = json.loads(path.read_text())
    return with_resolved_paths(ml_collections.ConfigDict(_with_defaults(saved, base.get_config().to_dict())))


@dataclasses.dataclass
class RestoredRun:
    config: ml_collections.ConfigDict
    model: object
    space: object  # LatentSpace
    state: object  # TrainState; `state.sampling_params` are the EMA params when the run kept them
    image_shape: tuple[int, int, int]  # model space, at the training resolution
    mesh: object

    @property
    def step(self) -> int:
        return int(self.state.step)

    @property
    def params(self):
        """What samples and evaluations use: the EMA params when the run kept them, else the params."""
        return self.state.sampling_params

    def generator(self, sampler: ml_collections.ConfigDict, negative_text, negative_mask,
                  size: tuple[int, int] | None = None):
        """A Generator of `size` (height, width) pixel images, by default the training resolution's square,
        with `sampler` settings (see `sampler_settings`) and the time shift of that size's token count."""
        from t2ijax.diffusion.generate import generator_at

        return generator_at(self.model, self.space, self.config, sampler, size or (self.config.data.resolution,) * 2,
                            negative_text, negative_mask, self.mesh)


def sampler_settings(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """The run's config.sampler with the overrides that are not None, validated against the run."""
    from t2ijax.config import check_sampler

    sampler = ml_collections.ConfigDict(config.sampler.to_dict())
    sampler.update({k: v for k, v in overrides.items() if v is not None})
    check_sampler(sampler, config.diffusion)
    return sampler


def restore_run(workdir: str, config: ml_collections.ConfigDict, text_length: int, text_dim: int,
                step: int | None = None) -> RestoredRun:
    """Restores checkpoint `step` (default: the latest) of the run in `workdir` onto all local devices."""
    from t2ijax import sharding
    from t2ijax.data.run_data import run_space
    from t2ijax.models.build import build_model
    from t2ijax.techniques import ema
    from t2ijax.techniques.frozen import teacher_dim
    from t2ijax.training import state as train_state
    from t2ijax.training.checkpoint import Checkpointer
    from t2ijax.training.optim import run_optimizer

    checkpointer = Checkpointer(os.fspath(storage.resolve(workdir) / "checkpoints"), read_only=True)
    steps = checkpointer.steps()
    if not steps:
        raise ConfigError(f"no checkpoint under {checkpointer.directory}; train first with t2ijax.main")
    if step is not None and step not in steps:
        raise ConfigError(f"no checkpoint for step {step} under {checkpointer.directory}; "
                          f"its steps are {', '.join(map(str, steps))}")
    space = run_space(config)
    model = build_model(config, space.channels, text_dim, teacher_dim(config))
    optimizer, _ = run_optimizer(config)
    mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))
    rules = sharding.logical_rules(config.sharding_rules)
    resolution = config.data.resolution // space.downsample
    example = train_state.example_inputs(1, resolution, space.channels, text_length, text_dim)
    abstract = train_state.abstract(model, optimizer, example, mesh, rules, ema.enabled(config.ema))
    state = checkpointer.restore(abstract, step)
    checkpointer.close()
    return RestoredRun(config, model, space, state, (resolution, resolution, space.channels), mesh)


def load_run(workdir: str, step: int | None = None,
             config: ml_collections.ConfigDict | None = None) -> RestoredRun:
    """The run in `workdir` at checkpoint `step` (default: the latest) on all local devices: `.config`,
    `.model` (a Flax module), `.params` (its EMA params when it kept them), `.state` and `.generator(...)`.

    `config` is the run's (`load_run_config(workdir)`) with fields that change no parameter shape
    overridden, as the CLIs override config.eval and config.sampler. Reads no dataset; only a latent-space
    run reads its latent normalization from its records' manifest (config.data.records)."""
    from t2ijax.benchmarks.planning import text_width

    config = load_run_config(workdir) if config is None else config
    return restore_run(workdir, config, config.text_encoder.max_length, text_width(config.text_encoder), step)

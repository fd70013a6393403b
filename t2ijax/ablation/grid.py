"""An ablation grid: an axis file's variants x seeds, each run's config and directory, checked before
anything runs, then trained one after the other.

Runs live in DIR/<variant>/seed_<k> (config.seed = k). A variant directory that is itself a run
(what `python -m t2ijax.main --workdir=DIR/<variant>` writes) is the run of its own config.seed.
"""
import dataclasses
import importlib.util
import json
import os
import re
import time
from collections.abc import Callable

import ml_collections
from absl import logging

from t2ijax import storage
from t2ijax.config import apply_overrides, configs_importable, flatten, validate
from t2ijax.errors import ConfigError
from t2ijax.interop.finetune import resolve_init_from
from t2ijax.training.restore import load_run_config, with_resolved_paths

# The side-by-side sample grid compares variants on the same prompts and noise.
SAMPLE_FIELDS = ("sample.prompts", "sampler.seed")


@dataclasses.dataclass(frozen=True)
class Axis:
    name: str
    path: str
    variants: dict[str, dict]  # variant -> its overrides; the first variant is the baseline
    get_config: Callable[[str], ml_collections.ConfigDict]

    @property
    def baseline(self) -> str:
        return next(iter(self.variants))


@dataclasses.dataclass(frozen=True)
class GridRun:
    variant: str
    seed: int
    config: ml_collections.ConfigDict
    workdir: str

    @property
    def label(self) -> str:
        return f"{self.variant} seed {self.seed}"


def load_axis(path: str, baseline: str | None = None) -> Axis:
    """The axis file `path`: VARIANTS (name -> overrides, the baseline first) and get_config(variant).

    With `baseline` (a config in configs/, e.g. compose_tiny) every variant overrides that config instead of
    the axis's own baseline: get_config(variant) reads `variant@baseline` (configs/ablations/__init__.py).
    """
    if not os.path.isfile(path):  # a Python file imported here: local by construction
        raise ConfigError(f"ablation config {path} not found; pass --config=configs/ablations/<axis>.py")
    name = os.path.splitext(os.path.basename(path))[0]
    configs_importable(path)
    spec = importlib.util.spec_from_file_location(f"t2ijax_axis_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    variants = getattr(module, "VARIANTS", None)
    if not isinstance(variants, dict) or not variants or not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"{path} is not an ablation axis: it needs VARIANTS (variant name -> overrides, the "
                          "baseline first) and get_config(variant), like configs/ablations/path.py")
    if not baseline:
        return Axis(name, path, variants, module.get_config)
    return Axis(name, path, variants, lambda variant: module.get_config(f"{variant}@{baseline}"))


def select_variants(axis: Axis, requested: list[str] | None) -> list[str]:
    """The requested variants in the axis's order, the baseline always first (deltas are taken to it)."""
    unknown = [v for v in requested or () if v not in axis.variants]
    if unknown:
        raise ConfigError(f"{axis.name} has no variant '{unknown[0]}'; its variants are: {', '.join(axis.variants)}")
    chosen = set(requested or axis.variants) | {axis.baseline}
    return [v for v in axis.variants if v in chosen]


def config_of(axis: Axis, variant: str, overrides: dict) -> ml_collections.ConfigDict:
    """The axis's config of `variant` with the command line's overrides on top."""
    try:
        config = axis.get_config(variant)
    except ConfigError as e:
        raise ConfigError(f"{axis.path}: {e}") from None
    apply_overrides(config, overrides, "the command line's --config overrides")
    resolve_init_from(config)
    return config


def _stored_config(run_dir: str) -> dict | None:
    """The flattened config.json of the run in `run_dir`, with today's defaults for newer fields."""
    if not (storage.Path(run_dir) / "config.json").exists():
        return None
    return _as_json(load_run_config(run_dir))


def _as_json(config: ml_collections.ConfigDict) -> dict:
    """Flattened as config.json stores it (tuples become lists), so configs compare as written."""
    return flatten(json.loads(config.to_json_best_effort()))


def differences(config: dict, reference: dict) -> dict:
    """The fields of flattened `config` whose values differ from `reference`'s, with config's values."""
    return {k: config.get(k) for k in config.keys() | reference.keys() if config.get(k) != reference.get(k)}


def overrides_of(run: GridRun, baseline: GridRun) -> dict:
    """What `run` changes in the baseline's config, the seed aside."""
    changed = differences(_as_json(run.config), _as_json(baseline.config))
    changed.pop("seed", None)
    return dict(sorted(changed.items()))


def seeds_on_disk(workdir: str, variant: str) -> set[int]:
    """Seeds of the runs already in DIR/<variant>: its seed_<k> directories and the variant directory itself."""
    directory = storage.Path(workdir) / variant
    if not directory.is_dir():
        return set()
    seeds = {int(m.group(1)) for m in (re.match(r"seed_(\d+)$", p.name) for p in directory.iterdir()) if m}
    single = _stored_config(os.fspath(directory))
    return seeds | ({single["seed"]} if single else set())


def run_dir(workdir: str, variant: str, seed: int) -> str:
    directory = storage.Path(workdir) / variant
    single = _stored_config(os.fspath(directory))
    return os.fspath(directory if single and single["seed"] == seed else directory / f"seed_{seed}")


def plan(axis: Axis, workdir: str, variants: list[str], seeds: int, overrides: dict) -> list[GridRun]:
    """Runs for `seeds` seeds of every variant (and every seed already on disk), baseline first."""
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds} must be at least 1")
    runs = []
    for variant in variants:
        config = config_of(axis, variant, overrides)
        for seed in sorted(set(range(seeds)) | seeds_on_disk(workdir, variant)):
            seeded = ml_collections.ConfigDict(config.to_dict())
            seeded.seed = seed
            if config.log.tensorboard_dir:  # each run its own, as <workdir>/tensorboard is
                seeded.log.tensorboard_dir = os.fspath(storage.Path(config.log.tensorboard_dir) / variant /
                                                       f"seed_{seed}")
            runs.append(GridRun(variant, seed, seeded, run_dir(workdir, variant, seed)))
    return runs


def check(runs: list[GridRun], num_devices: int | None = None, num_processes: int = 1) -> None:
    """Raises ConfigError before anything runs: an invalid variant (validated for `num_devices` when
    given), a variant that samples other prompts or noise than the baseline, or a run directory that
    holds a run of another config."""
    baseline = flatten(runs[0].config)
    for run in runs:
        if num_devices is not None:
            try:
                validate(run.config, num_devices, num_processes)
            except ConfigError as e:
                raise ConfigError(f"variant '{run.variant}': {e}") from None
        for field in SAMPLE_FIELDS:
            if flatten(run.config)[field] != baseline[field]:
                raise ConfigError(f"variant '{run.variant}' changes config.{field}; the side-by-side sample grid "
                                  "shows every variant on the baseline's prompts and noise, so keep that field")
        _check_stored(run)


def _check_stored(run: GridRun) -> None:
    stored = _stored_config(run.workdir)
    if stored is None:
        return
    wanted = _as_json(with_resolved_paths(run.config))  # paths as training stores them
    differing = sorted(differences(stored, wanted))
    if differing:
        name, others = differing[0], ", ".join(f"config.{k}" for k in differing[1:])
        raise ConfigError(f"{run.workdir} holds a run of another config (config.{name} is {stored.get(name)!r} "
                          f"there, {wanted.get(name)!r} here{'; also ' + others if others else ''}); pass the "
                          "--baseline and --config overrides that grid was run with, or another --workdir")


def is_finished(run: GridRun) -> bool:
    """Its final evaluation is written (eval.json at config.total_steps)."""
    path = storage.Path(run.workdir) / "eval.json"
    return path.exists() and json.loads(path.read_text()).get("step") == run.config.total_steps


def run_missing(runs: list[GridRun], poll_s: float = 30.0) -> None:
    """Trains every unfinished run in order; an interrupted one resumes from its latest checkpoint.

    A run whose workdir another trainer holds (the same command started again, on another core or host) is left
    to it and waited for after the others, polling every `poll_s` seconds; if that trainer dies, this one takes
    the run over. So several copies of one command share a grid.
    """
    from t2ijax.training.loop import train_and_evaluate
    from t2ijax.training.workdir_lock import WorkdirInUse

    pending, waiting = list(enumerate(runs, start=1)), set()
    while pending:
        held, trained = [], False
        for i, run in pending:
            if is_finished(run):
                logging.info("[%d/%d] %s: finished, skipped", i, len(runs), run.label)
                continue
            if i not in waiting:  # polled runs are logged once
                started = (storage.Path(run.workdir) / "checkpoints").is_dir()
                logging.info("[%d/%d] %s: %s in %s", i, len(runs), run.label,
                             "resuming" if started else "training", run.workdir)
            try:
                train_and_evaluate(run.config, run.workdir)
                trained = True
            except WorkdirInUse as e:
                if i not in waiting:
                    logging.info("[%d/%d] %s: left to its trainer, waited for after the others (%s)", i, len(runs),
                                 run.label, e)
                waiting.add(i)
                held.append((i, run))
        if held and not trained:
            time.sleep(poll_s)
        pending = held

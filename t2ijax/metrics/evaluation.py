"""Held-out evaluation: flow-matching loss per t bin, compositional accuracy of samples, and
feature metrics (FID, CMMD, DINO-MMD, ...) of samples against real held-out images.

`config.eval.metrics` picks the metrics. One that cannot run (weights not configured, too
few samples) is reported in one line under "skipped"; the others are still computed. The
training loop evaluates its own params (evaluators_by_size, evaluate_at_sizes); `evaluate_checkpoint`
scores a saved run's checkpoint (what `python -m t2ijax.evaluate` calls).
"""
import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from t2ijax import storage
from t2ijax.config import validate_eval
from t2ijax.data import compose
from t2ijax.data.pipeline import model_inputs
from t2ijax.data.run_data import open_run_data, text_embeddings
from t2ijax.errors import ConfigError
from t2ijax.metrics import compose_detect, composition, tensorboard_events
from t2ijax.metrics.features import FeatureExtractor, load_extractor, weights_path
from t2ijax.metrics.frechet import Moments, frechet_distance_of
from t2ijax.metrics.mmd import l2_normalize, mmd
from t2ijax.metrics.prompts import read_prompts
from t2ijax.metrics.reference import ReferenceFeatures
from t2ijax.registry import names
from t2ijax.sharding import batch_ways
from t2ijax.training.restore import load_run, load_run_config, sampler_settings
from t2ijax.training.step import make_heldout_loss

T_BINS = ((0.0, 0.3), (0.3, 0.6), (0.6, 1.0))
# The scorer of generated images per dataset, and the prompt attributes it reads; other datasets' prompts
# are scored as shapes scenes when a prompt file gives them shapes' attributes.
SCORERS = {"shapes": (composition.score, ("num_objects", "shape", "colour", "size", "position")),
           "compose": (compose_detect.score, ("num_objects", "category", "relation", *compose.OBJECT_FIELDS))}
SCENE_KEYS = tuple(dict.fromkeys(key for _, keys in SCORERS.values() for key in keys))
# Feature metrics: name -> (statistic, extractor). Only the Inception with FID weights is "fid".
FEATURE_METRICS = {
    "fid": ("frechet", "inception"),
    "fd_dinov2": ("frechet", "dinov2"),
    "fd_random_inception": ("frechet", "random_inception"),
    "cmmd": ("mmd", "clip"),
    "dino_mmd": ("mmd", "dinov2"),
}
METRICS = names("eval.metrics")
assert METRICS == ("loss_t", "composition", *FEATURE_METRICS), "eval.metrics: NAMES differs"


def heldout_loss_by_t_bin(loss_fn, params, validation: dict[str, np.ndarray], space,
                          cfg: ml_collections.ConfigDict, seed: int) -> dict[str, float]:
    """Mean of `loss_fn` (the velocity MSE) on the first `cfg.loss_examples` held-out examples, at times
    drawn uniformly inside each bin with fixed noise: the same numbers for the same params, every time."""
    n = min(cfg.loss_examples, len(validation["image"]))
    rng = np.random.default_rng(seed)
    out = {}
    for lo, hi in T_BINS:
        losses = []
        for start in range(0, n, cfg.batch_size):
            end = min(start + cfg.batch_size, n)
            x0 = model_inputs({k: validation[k][start:end] for k in ("image", "latent") if k in validation}, space)
            t = (lo + (hi - lo) * rng.uniform(size=end - start)).astype(np.float32)
            eps = rng.standard_normal(x0.shape).astype(np.float32)
            batch = {"x0": x0, "text": validation["text"][start:end], "text_mask": validation["text_mask"][start:end]}
            losses.append(np.asarray(loss_fn(params, batch, t, eps)))
        out[f"loss_t[{lo:.1f},{hi:.1f})"] = float(np.mean(np.concatenate(losses)))
    return out


def heldout_prompts(validation: dict[str, np.ndarray], num_samples: int) -> dict[str, np.ndarray]:
    """The first `num_samples` held-out captions: text, text_mask and their scene attributes."""
    keys = ("text", "text_mask", *(k for k in SCENE_KEYS if k in validation))
    return {k: validation[k][:num_samples] for k in keys}


class Evaluator:
    """Scores parameters with the metrics of `config.eval`. Feature extractors and the features
    of the real reference images are loaded once and reused at every evaluation."""

    def __init__(self, config: ml_collections.ConfigDict, validation: dict[str, np.ndarray], loss_fn, generator,
                 space, mesh: Mesh | None = None):
        self.cfg, self.seed = config.eval, config.seed
        self.score, self.scene_keys = SCORERS.get(config.data.name, SCORERS["shapes"])
        self.validation, self.loss_fn, self.generator, self.space = validation, loss_fn, generator, space
        self.mesh = mesh
        data, (height, width) = config.data, validation["image"].shape[1:3]
        size = f"{height}px" if height == width else f"{height}x{width}px"
        self.size = size
        self.references = ReferenceFeatures(validation["image"][:self.cfg.reference_examples],
                                            os.path.join(data.data_dir, "eval_reference"),
                                            f"{data.name}-{size}-validation")
        self._extractors: dict[str, FeatureExtractor | ConfigError] = {}

    @property
    def _feature_batch_size(self) -> int:
        """eval.batch_size rounded up to split evenly over the mesh's batch axes."""
        ways = batch_ways(self.mesh)
        return -(-self.cfg.batch_size // ways) * ways

    def _extractor(self, name: str) -> FeatureExtractor:
        if name not in self._extractors:
            try:
                self._extractors[name] = load_extractor(name, self.cfg)
            except ConfigError as error:  # remembered: a missing file is not retried every evaluation
                self._extractors[name] = error
        if isinstance(self._extractors[name], ConfigError):
            raise self._extractors[name]
        return self._extractors[name]

    def feature_metric(self, name: str, images: np.ndarray) -> float:
        statistic, extractor_name = FEATURE_METRICS[name]
        weights_path(extractor_name, self.cfg)  # unconfigured weights are the first reason to give
        needs, least = ("a covariance", 2) if statistic == "frechet" else ("MMD", 1)
        for what, count, field in (("generated", len(images), "num_samples"),
                                   ("reference", len(self.references.images), "reference_examples")):
            if count < least:
                raise ConfigError(f"{needs} needs at least {least} {what} images, got {count}; raise eval.{field}")
        extractor = self._extractor(extractor_name)
        batch_size = self._feature_batch_size
        reference = self.references.features(extractor, batch_size, self.mesh)
        if statistic == "mmd":
            return mmd(l2_normalize(extractor(images, batch_size, self.mesh)), l2_normalize(reference))
        generated, real = Moments(), Moments()
        for features, valid in extractor.batches(images, batch_size, self.mesh):
            generated.update(features, valid)
        real.update(reference)
        if min(generated.count, real.count) <= extractor.dim:
            logging.warning("%s: %d generated and %d reference images for %d-d features: the covariances are "
                            "singular and the distance is biased upwards; compare only runs with equal counts",
                            name, generated.count, real.count, extractor.dim)
        return frechet_distance_of(generated, real)

    def __call__(self, step: int, params, prompts: dict[str, np.ndarray] | None = None) -> dict:
        """Metrics (floats), "step", and "skipped" (metric -> reason) when some could not run.

        `prompts` (text, text_mask, optionally the scene attributes) default to the first
        eval.num_samples held-out captions; the loss always uses the held-out set.
        """
        metrics, skipped = {}, {}
        requested = list(self.cfg.metrics)
        generates = any(name != "loss_t" for name in requested)
        if generates:
            prompts = heldout_prompts(self.validation, self.cfg.num_samples) if prompts is None else prompts
        logging.info("evaluating step %d at %s: %s%s", step, self.size, ", ".join(requested),
                     f" on {len(prompts['text'])} prompts" if generates else "")
        if "loss_t" in requested:
            metrics.update(heldout_loss_by_t_bin(self.loss_fn, params, self.validation, self.space, self.cfg,
                                                 self.seed))
        if generates:
            images = self.generator(params, prompts["text"], prompts["text_mask"], batch_size=self.cfg.batch_size)
        if "composition" in requested:
            if all(k in prompts for k in self.scene_keys):
                scores = self.score(images, {k: prompts[k] for k in self.scene_keys})
                metrics.update({f"composition/{k}": v for k, v in scores.items()})
            else:
                skipped["composition"] = (f"the prompts carry no scene attributes ({', '.join(self.scene_keys)}) "
                                          "to check")
        for name in (n for n in requested if n in FEATURE_METRICS):
            try:
                metrics[name] = self.feature_metric(name, images)
            except ConfigError as error:
                skipped[name] = str(error)
        for name, reason in skipped.items():
            logging.warning("eval: %s skipped: %s", name, reason)
        metrics["step"] = step
        if skipped:
            metrics["skipped"] = skipped
        return metrics


def evaluators_by_size(config: ml_collections.ConfigDict, data, loss_fn, generator_for, space,
                       mesh: Mesh | None = None) -> dict[str, Evaluator]:
    """An Evaluator at the run's own size under "" and one per config.eval.sizes under "HxW" (the run's
    square, if listed, is the same one). `data` is the RunData; `generator_for((height, width))`
    makes the Generator of a size."""
    square = (config.data.resolution,) * 2
    own = Evaluator(config, data.validation, loss_fn, generator_for(square), space, mesh)
    sizes = {f"{h}x{w}": (h, w) for h, w in map(tuple, config.eval.sizes)}
    return {"": own, **{name: own if size == square else Evaluator(config, data.validation_at[size], loss_fn,
                                                                     generator_for(size), space, mesh)
                        for name, size in sizes.items()}}


def evaluate_at_sizes(evaluators: dict[str, Evaluator], step: int, params, prompts=None) -> dict:
    """The metrics of every evaluator (one per image size): those of the one under "" as they are,
    the others' prefixed "<its key>/" (e.g. "32x64/composition/shape")."""
    metrics, skipped, done = {"step": step}, {}, {}
    for size, evaluator in evaluators.items():
        prefix = f"{size}/" if size else ""
        if id(evaluator) not in done:  # one evaluator under two names (the run's own size in eval.sizes) runs once
            done[id(evaluator)] = evaluator(step, params, prompts)
        at_size = dict(done[id(evaluator)])
        skipped.update({prefix + k: v for k, v in at_size.pop("skipped", {}).items()})
        metrics.update({prefix + k: v for k, v in at_size.items() if k != "step"})
    if skipped:
        metrics["skipped"] = skipped
    return metrics


def scalars(metrics: dict) -> dict[str, float]:
    """The numeric metrics, for TensorBoard."""
    return {k: v for k, v in metrics.items() if k != "step" and isinstance(v, (int, float))}


def tensorboard_dir(log: ml_collections.ConfigDict, workdir: str) -> str:
    """config.log.tensorboard_dir, or <workdir>/tensorboard when it is empty."""
    return os.fspath(storage.resolve(log.tensorboard_dir) if log.tensorboard_dir else
                     storage.resolve(workdir) / "tensorboard")


def write_json(metrics: dict, path: str) -> None:
    if jax.process_index() == 0:
        path = storage.resolve(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True))


def evaluate_checkpoint(workdir: str, step: int | None = None, prompts_file: str | None = None,
                        seed: int | None = None, out: str | None = None, sampler: dict | None = None,
                        **eval_overrides) -> tuple[dict, str]:
    """Scores checkpoint `step` of the run in `workdir`; returns (metrics, path of the JSON written).

    `eval_overrides` replace fields of the run's config.eval (metrics, num_samples, ...), `sampler`
    fields of its config.sampler (name, steps, guidance, ...); `seed` sets both seeds.
    """
    config = load_run_config(workdir)
    config.eval.update({k: (tuple(v) if k in ("metrics", "sizes") else v) for k, v in eval_overrides.items()
                        if v is not None})
    config.seed = config.seed if seed is None else seed
    config.sampler = sampler_settings(config, **(sampler or {}), seed=seed)
    validate_eval(config)
    captions, scenes = read_prompts(prompts_file) if prompts_file else (None, None)

    data = open_run_data(config, build=False)
    run = load_run(workdir, step, config)
    prompts = None
    if captions is not None:
        text, text_mask = text_embeddings(config, data.directory, data.manifest, list(captions))
        prompts = {"text": text, "text_mask": text_mask, **(scenes or {})}
    evaluators = evaluators_by_size(
        config, data, jax.jit(make_heldout_loss(run.model, config.diffusion)),
        lambda size: run.generator(config.sampler, data.negative_text, data.negative_mask, size), run.space, run.mesh)
    metrics = evaluate_at_sizes(evaluators, run.step, run.state.sampling_params, prompts)
    metrics["settings"] = {"seed": config.seed, "num_samples": len(prompts["text"]) if prompts else
                           min(config.eval.num_samples, len(data.validation["text"])),
                           "prompts": prompts_file or "held-out captions", "sampler": config.sampler.to_dict()}
    path = out or os.fspath(storage.resolve(workdir) / "eval" / f"evaluate_step_{run.step:07d}.json")
    write_json(metrics, path)
    writer = tensorboard_events.tensorboard_writer(tensorboard_dir(config.log, workdir))
    writer.write_scalars(run.step, {f"evaluate/{k}": v for k, v in scalars(metrics).items()})
    writer.flush()
    return metrics, path

"""Held-out evaluation: flow-matching loss per t bin, and compositional accuracy of samples."""
import json
import os

import jax
import ml_collections
import numpy as np

from t2ijax.data.prepare import ATTRIBUTE_KEYS, images_to_model_space

T_BINS = ((0.0, 0.3), (0.3, 0.6), (0.6, 1.0))


def heldout_loss_by_t_bin(loss_fn, params, validation: dict[str, np.ndarray], autoencoder,
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
            x0 = images_to_model_space(validation["image"][start:end], autoencoder)
            t = (lo + (hi - lo) * rng.uniform(size=end - start)).astype(np.float32)
            eps = rng.standard_normal(x0.shape).astype(np.float32)
            batch = {"x0": x0, "text": validation["text"][start:end], "text_mask": validation["text_mask"][start:end]}
            losses.append(np.asarray(loss_fn(params, batch, t, eps)))
        out[f"loss_t[{lo:.1f},{hi:.1f})"] = float(np.mean(np.concatenate(losses)))
    return out


def composition_scores(generator, params, validation: dict[str, np.ndarray],
                       cfg: ml_collections.ConfigDict) -> tuple[dict[str, float], np.ndarray]:
    """Generates the first `cfg.num_samples` held-out prompts (with the generator's config.sampler)
    and scores them with the analytic detector. Returns (accuracies, images)."""
    from t2ijax.metrics import composition

    n = min(cfg.num_samples, len(validation["image"]))
    images = generator(params, validation["text"][:n], validation["text_mask"][:n], batch_size=cfg.batch_size)
    scores = composition.score(images, {k: validation[k][:n] for k in ATTRIBUTE_KEYS})
    return {f"composition/{k}": float(v) for k, v in scores.items()}, images


def evaluate(step: int, loss_fn, generator, params, validation, autoencoder, cfg, seed: int) -> dict[str, float]:
    metrics = heldout_loss_by_t_bin(loss_fn, params, validation, autoencoder, cfg, seed)
    if all(k in validation for k in ATTRIBUTE_KEYS):
        scores, _ = composition_scores(generator, params, validation, cfg)
        metrics.update(scores)
    metrics["step"] = step
    return metrics


def write_json(metrics: dict, path: str) -> None:
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)

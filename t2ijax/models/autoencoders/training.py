"""Training a small KL autoencoder on a dataset's images (the CLI: t2ijax/train_autoencoder.py).

Loss per image: squared error summed over pixels + autoencoder_training.kl_weight x KL(posterior ||
N(0, I)) summed over the latent, decoding a posterior sample. Writes <workdir>/autoencoder, a
diffusers AutoencoderKL directory whose shift/scaling factors are the latents' mean and 1 / std on
latents.stats_examples training images, and <workdir>/reconstruction.json (held-out PSNR).
"""
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from t2ijax import storage
from t2ijax.config import mount_instruction, validate
from t2ijax.data.order import BatchOrder
from t2ijax.data.sources import load_split
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders.kl import AutoencoderKL, KLConfig
from t2ijax.models.autoencoders.posterior import Posterior
from t2ijax.models.autoencoders.pretrained import save_autoencoder_kl

_WARMUP_STEPS = 100


def _to_unit_range(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 127.5 - 1.0


def psnr(reconstructions: np.ndarray, images: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2), clipped as pixels would be."""
    mse = np.mean((np.clip(reconstructions, -1, 1) - images) ** 2)
    return float(10 * np.log10(4.0 / mse))


def make_train_step(module: AutoencoderKL, optimizer: optax.GradientTransformation, kl_weight: float):
    def loss_fn(params, images, rng):
        mean, logvar = module.apply({"params": params}, images, method="encode")
        posterior = Posterior(mean, logvar)
        reconstructions = module.apply({"params": params}, posterior.sample(rng), method="decode")
        squared_error = jnp.sum((reconstructions - images) ** 2, axis=(1, 2, 3))
        kl = posterior.kl()
        return jnp.mean(squared_error + kl_weight * kl), (jnp.mean(squared_error) / images[0].size, jnp.mean(kl))

    @jax.jit
    def train_step(params, opt_state, images, rng):
        (loss, (mse, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "mse": mse, "kl": kl}

    return train_step


def _latent_means(module: AutoencoderKL, params, images: np.ndarray, batch_size: int = 256):
    encode = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode")[0])
    return np.concatenate([np.asarray(encode(params, _to_unit_range(images[i:i + batch_size])))
                           for i in range(0, len(images), batch_size)])


def _reconstruction_psnr(module: AutoencoderKL, params, images: np.ndarray, batch_size: int = 256) -> float:
    reconstruct = jax.jit(lambda p, x: module.apply({"params": p}, x))
    x = _to_unit_range(images)
    out = np.concatenate([np.asarray(reconstruct(params, x[i:i + batch_size])) for i in range(0, len(x), batch_size)])
    return psnr(out, x)


def train_autoencoder(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains, saves <workdir>/autoencoder and returns {"autoencoder": path, "psnr": dB, ...}."""
    if storage.is_url(workdir):
        raise ConfigError(f"--workdir={workdir}: the autoencoder is a local diffusers directory (read through "
                          f"config.autoencoder.name); {mount_instruction('--workdir', workdir)}")
    validate(config, jax.device_count(), jax.process_count())
    t = config.autoencoder_training
    output = os.path.join(workdir, "autoencoder")
    if os.path.exists(output):
        raise ConfigError(f"{output} exists; it is kept: pass another --workdir")
    os.makedirs(workdir, exist_ok=True)  # a local path: a URL was refused above
    train_images = load_split(config.data, "train")["image"]
    validation_images = load_split(config.data, "validation")["image"]
    kl_config = KLConfig(block_out_channels=tuple(t.block_out_channels), layers_per_block=t.layers_per_block,
                         latent_channels=t.latent_channels, norm_num_groups=t.norm_num_groups)
    module = AutoencoderKL(kl_config)
    rng = jax.random.key(config.seed)
    params = nn.unbox(module.init(rng, jnp.zeros((1,) + train_images.shape[1:], jnp.float32))["params"])
    schedule = optax.linear_schedule(0.0, t.learning_rate, _WARMUP_STEPS)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(params)
    train_step = make_train_step(module, optimizer, t.kl_weight)
    order = BatchOrder([len(train_images)], t.batch_size, config.seed)
    start, log_every = time.time(), max(t.steps // 20, 1)
    for step in range(t.steps):
        images = _to_unit_range(train_images[order.draw(step)[1]])
        params, opt_state, metrics = train_step(params, opt_state, images, jax.random.fold_in(rng, step))
        if (step + 1) % log_every == 0 or step + 1 == t.steps:
            metrics = {k: float(v) for k, v in metrics.items()}
            logging.info("step %d/%d  loss %.2f  mse %.5f  kl %.1f  %.1f steps/s", step + 1, t.steps,
                         metrics["loss"], metrics["mse"], metrics["kl"], (step + 1) / (time.time() - start))
    latents = _latent_means(module, params, train_images[:config.latents.stats_examples])
    shift, scale = float(latents.mean()), float(1.0 / latents.std())
    save_autoencoder_kl(output, kl_config, params, shift_factor=shift, scaling_factor=scale)
    result = {"autoencoder": output, "psnr": _reconstruction_psnr(module, params, validation_images),
              "steps": t.steps, "seconds": round(time.time() - start, 1), "shift_factor": shift, "scaling_factor": scale}
    with open(os.path.join(workdir, "reconstruction.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result

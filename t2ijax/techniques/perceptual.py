"""Perceptual losses between the denoiser's x0 estimate and the real image: P-DINO and LPIPS.

Both compare images [B, H, W, 3] in [-1, 1] and return one loss per example; gradients flow
through the prediction only (the real image's features are constants). They are valid only where
the train step has
- an x0 estimate: the output itself under x-prediction (diffusion.prediction='x0', PRX's setting
  for both), or converted from the output (on rectified flow x0 = x_t - t v for a velocity; any
  prediction through Prediction.split, though those from epsilon blow up as t -> 1), and
- pixels: pixel space (autoencoder 'identity'), or latents decoded inside the step by the
  autoencoder's decoder (differentiable, at the decoder's cost).
PRX weights each loss over the examples with t below a threshold only (`below_t_weights`): near
t = 1 the estimate is a blur whatever the network does.

P-DINO (PixelGen, as in PRX): the mean over patches of 1 - cos(f(x0_pred), f(x0)), f the teacher's
final-LayerNorm patch tokens (config.teacher; PRX: DINOv2 ViT-B/14 with registers on 256 px
bilinear resizes, where here the teacher resizes bicubically to its grid). LPIPS: models/vision/lpips.py.
"""
from pathlib import Path

import jax
import jax.numpy as jnp

from t2ijax.errors import ConfigError
from t2ijax.models.vision.lpips import Lpips
from t2ijax.techniques.teachers import Teacher

_COSINE_EPS = 1e-8  # torch.nn.functional.cosine_similarity's


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine similarity over the last axis, each norm clamped as torch.nn.functional.cosine_similarity does."""
    norms = jnp.maximum(jnp.linalg.norm(a, axis=-1), _COSINE_EPS) * jnp.maximum(jnp.linalg.norm(b, axis=-1), _COSINE_EPS)
    return jnp.sum(a * b, axis=-1) / norms


def pdino_loss(teacher: Teacher, params, predicted: jax.Array, real: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """[B]: mean over the teacher's grid of 1 - cosine(features of predicted, features of real)."""
    target = jax.lax.stop_gradient(teacher.features(params, real, grid))
    return jnp.mean(1.0 - cosine(teacher.features(params, predicted, grid), target), axis=(1, 2))


def lpips_loss(module: Lpips, params, predicted: jax.Array, real: jax.Array) -> jax.Array:
    """[B]: the LPIPS distance of each predicted image to its real one."""
    pair = jnp.stack([predicted, jax.lax.stop_gradient(real)])
    return module.apply({"params": jax.lax.stop_gradient(params)}, pair)


def below_t_weights(t: jax.Array, t_max: float) -> jax.Array:
    """[B] weights that make sum(weights * per-example loss) the mean over the examples with t < t_max
    (0 when there are none; t_max 1 keeps all but t = 1). Drawn for the whole batch, they give each
    microbatch its share of that mean."""
    keep = (t < t_max).astype(jnp.float32)
    return keep / jnp.maximum(jnp.sum(keep), 1.0)


def dino_grid(perceptual, token_grid: tuple[int, int]) -> tuple[int, int] | None:
    """The teacher grid P-DINO asks for, None when it is off."""
    if perceptual.dino_weight <= 0:
        return None
    return (perceptual.dino_grid,) * 2 if perceptual.dino_grid else tuple(token_grid)


def check_perceptual(perceptual) -> None:
    """The config.perceptual checks that need no teacher (config.py checks the teacher P-DINO uses)."""
    for name in ("dino_weight", "lpips_weight"):
        if perceptual[name] < 0:
            raise ConfigError(f"config.perceptual.{name}={perceptual[name]} must be >= 0")
    if not isinstance(perceptual.dino_grid, int) or perceptual.dino_grid < 0:
        raise ConfigError(f"config.perceptual.dino_grid={perceptual.dino_grid} must be a whole number >= 0 "
                          "(0: the denoiser's token grid)")
    for name in ("dino_t_max", "lpips_t_max"):
        if not 0.0 < perceptual[name] <= 1.0:
            raise ConfigError(f"config.perceptual.{name}={perceptual[name]} must be in (0, 1]")
    if perceptual.lpips_weight > 0 and not perceptual.lpips_weights:
        raise ConfigError("LPIPS requested with no weights: config.perceptual.lpips_weight > 0 needs "
                          "config.perceptual.lpips_weights (an LPIPS VGG .safetensors file; see "
                          "t2ijax/models/vision/lpips.py for how to make one), or set lpips_weight=0")
    path = Path(perceptual.lpips_weights).expanduser()
    if perceptual.lpips_weights and (not path.is_file() or path.suffix != ".safetensors"):
        raise ConfigError(f"config.perceptual.lpips_weights='{perceptual.lpips_weights}' is not a .safetensors file; "
                          "see t2ijax/models/vision/lpips.py for how to make one")

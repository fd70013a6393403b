"""Ablation of the space the denoiser trains in: pixels, pixels through PRX's patch bottleneck,
or the latents of a KL autoencoder trained on the synthetic shapes.

Everything else is the CPU demo (configs/shapes_tiny.py). The shapes_kl variants need the
autoencoder of configs/shapes_autoencoder.py (see configs/ablations/latent_normalization.py):
  python -m t2ijax.train_autoencoder --config=configs/shapes_autoencoder.py --workdir=workdirs/shapes_autoencoder
The whole axis:
  for v in pixel pixel_bottleneck shapes_kl shapes_kl_patch2; do
    python -m t2ijax.main --config=configs/ablations/latent_space.py:$v --workdir=workdirs/ablations/latent_space/$v; done
A pretrained autoencoder (diffusers-format directory: SD/SDXL, Flux.1, Flux.2, REPA-E VAE, DC-AE)
runs the same way at a resolution its downsampling leaves a few latent pixels for, e.g.
  python -m t2ijax.main --config=configs/ablations/latent_space.py:shapes_kl --config.autoencoder.name=/path/to/vae \
      --config.data.resolution=128 --config.model.patch_size=2 --config.latents.normalization=config_factors \
      --workdir=workdirs/ablations/latent_space/NAME
Result (2026-11-27, one seed, docs/ablations/grid_toy.md): shape pixel 0.755 ± 0.046 (3 seeds), shapes_kl 0.632,
shapes_kl_patch2 0.677, pixel_bottleneck 0.612 with scene 0.03 (the bottleneck needs x-prediction).
"""
from configs.ablations import variant_config
from configs.ablations.latent_normalization import LATENT_DEMO

VARIANTS = {
    "pixel": {},  # the baseline: patch 4 over 32 x 32 x 3 pixels
    "pixel_bottleneck": {"model.bottleneck_size": 16},  # 48 features per patch through a 16-d linear bottleneck
    "shapes_kl": {**LATENT_DEMO, "latents.normalization": "channel_stats"},  # 8 x 8 x 4, patch 1: 64 tokens
    "shapes_kl_patch2": {**LATENT_DEMO, "latents.normalization": "channel_stats", "model.patch_size": 2},  # 16 tokens
}


def get_config(variant: str = "pixel"):
    return variant_config(VARIANTS, variant)

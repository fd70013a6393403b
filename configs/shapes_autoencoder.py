"""A KL autoencoder for the 32x32 synthetic shapes: 4x downsampling, 4 latent channels (8x8x4).

Train (2-core CPU, niced):
  python -m t2ijax.train_autoencoder --config=configs/shapes_autoencoder.py --workdir=workdirs/shapes_autoencoder
Result (2026-11-26, 2-core CPU shared with other jobs, 500 steps, 2m36s CPU, 5m31s wall including
building the dataset): held-out PSNR 19.96 dB (512 validation images, posterior mean); its latents
are far from unit: mean -0.53, std 3.2 (shift_factor -0.532, scaling_factor 0.311 in its config.json).
Then point denoiser configs at it (configs/ablations/latent_normalization.py does):
  --config.autoencoder.name=workdirs/shapes_autoencoder/autoencoder
"""
from configs import shapes_tiny


def get_config():
    return shapes_tiny.get_config()

"""A KL autoencoder for the 32x32 synthetic shapes: 4x downsampling, 4 latent channels (8x8x4).

Train (2-core CPU, niced):
  python -m t2ijax.train_autoencoder --config=configs/shapes_autoencoder.py --workdir=workdirs/shapes_autoencoder
then point denoiser configs at it (configs/ablations/latent_normalization.py does):
  --config.autoencoder.name=workdirs/shapes_autoencoder/autoencoder
"""
from configs import shapes_tiny


def get_config():
    return shapes_tiny.get_config()

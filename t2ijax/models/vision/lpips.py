"""LPIPS (Zhang et al. 2018, version 0.1, VGG16 trunk) in Flax.

The distance between two images in [-1, 1]: shift and scale the inputs, run VGG16's conv layers,
and at each of relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 unit-normalise the features over
channels, square their difference, weight the channels by the learned linear head (a 1x1 conv
without bias) and average over positions; the distance is the sum over the five taps.

Weights: a .safetensors file holding the state dict of the `lpips` package's `LPIPS(net="vgg")`
(the trunk as `net.sliceS.I.*`, indices of torchvision's vgg16().features, the heads as
`linK.model.1.weight`), written once where torch and `lpips` are installed:
    safetensors.torch.save_file(lpips.LPIPS(net="vgg").state_dict(), "lpips_vgg.safetensors")
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.models.autoencoders.layers import conv
from t2ijax.models.autoencoders.weights import params_from_torch
from t2ijax.models.vision.weights import TorchTensors, read_weights

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# (slice, indices of its convs in vgg16().features, width) for each tap; a 2x2 max-pool starts every slice but the first.
VGG16_SLICES = ((1, (0, 2), 64), (2, (5, 7), 128), (3, (10, 12, 14), 256), (4, (17, 19, 21), 512),
                (5, (24, 26, 28), 512))


def _unit(features: jax.Array) -> jax.Array:
    """features / (|features| + 1e-10) over channels. All-zero features come out of ReLUs that pass
    no gradient back, so the infinite slope of the norm there never reaches a parameter or pixel."""
    return features / (jnp.sqrt(jnp.sum(features**2, axis=-1, keepdims=True)) + 1e-10)


class Lpips(nn.Module):
    """pair [2, B, H, W, 3] in [-1, 1] (H, W >= 16) -> the LPIPS distance of pair[0][i] and pair[1][i], [B]."""

    @nn.compact
    def __call__(self, pair: jax.Array) -> jax.Array:
        batch = pair.shape[1]
        x = (pair.reshape(-1, *pair.shape[2:]).astype(jnp.float32) - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
        distance = jnp.zeros((batch,), jnp.float32)
        for tap, (slice_index, convs, width) in enumerate(VGG16_SLICES):
            if tap:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for index in convs:
                x = nn.relu(conv(width, 3, f"net.slice{slice_index}.{index}")(x))
            first, second = _unit(x[:batch]), _unit(x[batch:])
            weighted = conv(1, 1, f"lin{tap}.model.1", bias=False)((first - second) ** 2)
            distance = distance + weighted.mean(axis=(1, 2, 3))
        return distance


def load_lpips(path) -> tuple[Lpips, dict]:
    """The network and its float32 parameters from an LPIPS .safetensors file (see the module docstring)."""
    _, tensors = read_weights(path, "LPIPS")
    module = Lpips()
    return module, params_from_torch(module, np.zeros((2, 1, 16, 16, 3), np.float32), TorchTensors(tensors, "LPIPS"))

"""Perceptual losses: LPIPS against a torch transcription written here, P-DINO's math on a known teacher,
the t weights, and the config errors.

The LPIPS reference is a transcription, not the `lpips` package's output: `lpips` 0.1.4 imports
torchvision, and the only torchvision for torch 2.13 on PyPI (0.28.0) is a CUDA build that fails to
import against the CPU torch ("operator torchvision::nms does not exist"). It is written from the
paper (Zhang et al. 2018, eq. 1) and the package's source, independently of t2ijax's code: its input
scaling (lpips/lpips.py, ScalingLayer), the VGG16 slices (lpips/pretrained_networks.py, vgg16) and
the channel normalisation (lpips/__init__.py, normalize_tensor, eps 1e-10). The VGG16 trunk and the
linear heads are random: the weights are the user's file, the test checks the arithmetic."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch

from configs import shapes_tiny
from t2ijax.config import validate
from t2ijax.errors import ConfigError
from t2ijax.models.vision.lpips import load_lpips
from t2ijax.techniques.perceptual import below_t_weights, lpips_loss, pdino_loss
from t2ijax.techniques.teachers import Teacher

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16().features
SLICE_STARTS = (0, 4, 9, 16, 23)
# lpips/lpips.py ScalingLayer: torch.Tensor([-.030,-.088,-.188]) and torch.Tensor([.458,.448,.450])
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class TorchLpipsTranscription(torch.nn.Module):
    """LPIPS v0.1 with a VGG16 trunk, transcribed from the paper and the `lpips` package's source."""

    def __init__(self):
        super().__init__()
        layers, channels = [], 3
        for width in VGG16:
            if width == "M":
                layers.append(torch.nn.MaxPool2d(2, 2))
            else:
                layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU()]
                channels = width
        self.features = torch.nn.Sequential(*layers)
        self.heads = torch.nn.ModuleList(torch.nn.Conv2d(w, 1, 1, bias=False) for w in (64, 128, 256, 512, 512))

    def forward(self, a, b):
        shift, scale = torch.tensor(LPIPS_SHIFT)[:, None, None], torch.tensor(LPIPS_SCALE)[:, None, None]
        a, b, total = (a - shift) / scale, (b - shift) / scale, 0.0
        for index, layer in enumerate(self.features[:TAPS[-1] + 1]):
            a, b = layer(a), layer(b)
            if index in TAPS:
                unit_a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                unit_b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + self.heads[TAPS.index(index)]((unit_a - unit_b) ** 2).mean((2, 3))
        return total[:, 0]

    def lpips_state_dict(self):
        """Named as the `lpips` package names its LPIPS(net="vgg") tensors."""
        state = {}
        for name, tensor in self.features.state_dict().items():
            index = int(name.split(".")[0])
            part = sum(index >= start for start in SLICE_STARTS)
            state[f"net.slice{part}.{name}"] = tensor
        for k, head in enumerate(self.heads):
            state[f"lin{k}.model.1.weight"] = head.weight
        return {k: v.contiguous() for k, v in state.items()}


@pytest.fixture(scope="module")
def lpips_pair(tmp_path_factory):
    torch.manual_seed(0)
    reference = TorchLpipsTranscription().eval()
    with torch.no_grad():
        for head in reference.heads:
            head.weight.abs_()  # LPIPS heads are non-negative
    path = tmp_path_factory.mktemp("lpips") / "lpips_vgg.safetensors"
    safetensors.torch.save_file(reference.lpips_state_dict(), str(path))
    return reference, *load_lpips(path)


def _images(seed, n=2, size=32):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def test_lpips_matches_a_torch_transcription_of_the_lpips_package(lpips_pair):
    """Forward only: compiling VGG16's backward costs tens of seconds on a CPU."""
    reference, module, params = lpips_pair
    predicted, real = _images(0), _images(1)
    with torch.no_grad():
        expected = reference(*(torch.from_numpy(x).permute(0, 3, 1, 2) for x in (predicted, real))).numpy()
    got = np.asarray(jax.jit(lpips_loss, static_argnums=0)(module, params, predicted, real))
    assert got.shape == (2,) and np.all(got > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def linear_teacher():
    """Features: a fixed linear map of the mean pixel of each grid cell (4 channels)."""
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)

    def extract(params, pixels, grid):
        b, h, w, c = pixels.shape
        cells = pixels.reshape(b, grid[0], h // grid[0], grid[1], w // grid[1], c).mean((2, 4))
        return cells @ (params * weights)

    return Teacher("linear", 4, extract)


def test_pdino_is_one_minus_cosine_averaged_over_the_grid():
    teacher, params = linear_teacher(), jnp.float32(1.0)
    predicted, real = _images(2, size=8), _images(3, size=8)
    got = np.asarray(pdino_loss(teacher, params, predicted, real, (2, 4)))
    a, b = (np.asarray(teacher.features(params, x, (2, 4))) for x in (predicted, real))
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    np.testing.assert_allclose(got, (1 - cosine).mean((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(pdino_loss(teacher, params, real, real, (2, 4)), 0.0, atol=1e-6)
    to_predicted, to_real = jax.grad(lambda x, y: pdino_loss(teacher, params, x, y, (2, 4)).sum(),
                                     argnums=(0, 1))(predicted, real)
    assert np.any(np.asarray(to_predicted)) and not np.any(np.asarray(to_real))


def test_below_t_weights_average_the_kept_examples_only():
    losses, t = jnp.asarray([1.0, 2.0, 3.0, 6.0]), jnp.asarray([0.1, 0.5, 0.9, 0.2])
    assert float(jnp.sum(losses * below_t_weights(t, 0.5))) == pytest.approx(3.5)
    assert float(jnp.sum(losses * below_t_weights(t, 1.0))) == pytest.approx(3.0)
    assert not np.any(np.asarray(below_t_weights(t, 0.05)))


@pytest.mark.parametrize("field, value, message", [
    ("lpips_weight", 0.1, "LPIPS requested with no weights"),
    ("lpips_weights", "nowhere.safetensors", r"lpips_weights='nowhere.safetensors' is not a .safetensors file"),
    ("dino_weight", -1.0, r"config.perceptual.dino_weight=-1.0 must be >= 0"),
    ("dino_t_max", 0.0, r"config.perceptual.dino_t_max=0.0 must be in \(0, 1\]"),
    ("dino_grid", -2, "config.perceptual.dino_grid=-2 must be a whole number"),
])
def test_perceptual_config_errors(field, value, message):
    c = shapes_tiny.get_config()
    c.perceptual[field] = value
    with pytest.raises(ConfigError, match=message) as error:
        validate(c, num_devices=1)
    assert "\n" not in str(error.value)

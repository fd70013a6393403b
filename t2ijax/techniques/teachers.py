"""Frozen teachers: patch features of images on a requested grid (REPA's targets, the P-DINO loss).

`config.teacher.name` picks one; a technique that needs a teacher never gets another one than
the config names (offline there is no pretrained DINO: name the autoencoder teacher instead).

| name        | network (config.teacher.path)                       | what it sees                         |
|-------------|-----------------------------------------------------|--------------------------------------|
| dinov2      | DINOv2 ViT, with or without registers (HF directory) | images resized (bicubic) so that the patch grid is the requested one, in [0, 1] with ImageNet mean/std |
| dinov3      | DINOv3 ViT (HF directory)                            | the same                             |
| autoencoder | encoder of a diffusers AutoencoderKL directory (t2ijax.train_autoencoder's) | the images as they are |

ViT teachers return the patch tokens after the final LayerNorm (DINO's `x_norm_patchtokens`).
The autoencoder teacher returns the map its latent projection (conv_out) reads: the whole trunk
after the attention mid block, GroupNorm and SiLU, block_out_channels[-1] wide (32 for the shapes
autoencoder) where the latent mean has only latent_channels (4), squeezed for reconstruction.
That map is average-pooled to the requested grid, which must divide it exactly.
"""
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders.kl import Encoder, KLConfig
from t2ijax.models.autoencoders.pretrained import PretrainedAutoencoder
from t2ijax.models.vision import dinov2, dinov3
from t2ijax.models.vision.resize import resize
from t2ijax.registry import names

NONE = "none"
VIT_TEACHERS = {  # name -> (loader, the model types its config.json may have)
    "dinov2": (dinov2.load_dinov2, dinov2.MODEL_TYPES),
    "dinov3": (dinov3.load_dinov3, (dinov3.MODEL_TYPE,)),
}
AUTOENCODER = "autoencoder"
AUTOENCODER_CLASSES = ("AutoencoderKL", "AutoencoderKLFlux2")
TEACHERS = names("teacher.name")
assert set(TEACHERS) == {NONE, *VIT_TEACHERS, AUTOENCODER}, "teacher.name: registry.NAMES differs"
_HUB_FILES = ["config.json", "*.safetensors"]


@dataclasses.dataclass(frozen=True)
class Teacher:
    """`features(params, pixels, grid)`: pixels [B, H, W, 3] in [-1, 1] -> float32 [B, gh, gw, dim].

    Pure and jittable; pass `params` into the jitted step as an argument. Gradients never reach the
    params, but do reach `pixels` (P-DINO differentiates through the prediction's features).
    """

    name: str
    dim: int
    extract: Callable[[Any, jax.Array, tuple[int, int]], jax.Array]

    def features(self, params, pixels: jax.Array, grid: tuple[int, int]) -> jax.Array:
        return self.extract(jax.lax.stop_gradient(params), pixels.astype(jnp.float32), tuple(grid))


def _vit_extract(module) -> Callable:
    patch, mean, std = module.config.patch_size, jnp.asarray(dinov2.MEAN), jnp.asarray(dinov2.STD)

    def extract(params, pixels, grid):
        size = (grid[0] * patch, grid[1] * patch)
        shrinking = size[0] < pixels.shape[1] or size[1] < pixels.shape[2]
        # P-DINO's predictions overshoot [-1, 1]; DINO never saw values outside [0, 1].
        x = resize(jnp.clip((pixels + 1.0) / 2.0, 0.0, 1.0), size, "bicubic", antialias=shrinking)
        return module.apply({"params": params}, (x - mean) / std, method="encode")[1]

    return extract


def _pooled(maps: jax.Array, grid: tuple[int, int]) -> jax.Array:
    batch, height, width, channels = maps.shape
    if height % grid[0] or width % grid[1]:
        raise ConfigError(f"the autoencoder teacher's {height}x{width} feature map cannot be pooled to the "
                          f"{grid[0]}x{grid[1]} grid asked for; ask for a grid dividing it")
    fh, fw = height // grid[0], width // grid[1]
    return maps.reshape(batch, grid[0], fh, grid[1], fw, channels).mean(axis=(2, 4))


def _autoencoder_teacher(path: str) -> tuple[Teacher, dict]:
    autoencoder = PretrainedAutoencoder(path)
    if not isinstance(autoencoder.config, KLConfig):
        raise ConfigError(f"config.teacher.path='{path}' is not an AutoencoderKL; the autoencoder teacher reads "
                          f"{' or '.join(AUTOENCODER_CLASSES)} encoders")
    encoder = Encoder(autoencoder.config, features_only=True)

    def extract(params, pixels, grid):
        return _pooled(encoder.apply({"params": params}, pixels), grid)

    return Teacher(AUTOENCODER, autoencoder.config.block_out_channels[-1], extract), autoencoder.params["encoder"]


def _looks_like_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "~", "/")) and not Path(path).expanduser().exists()


def _local_dir(path: str) -> Path:
    """The directory, or a Hub id's download (online only)."""
    if Path(path).expanduser().is_dir() or not _looks_like_hub_id(path):
        return Path(path).expanduser()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, allow_patterns=_HUB_FILES))
    except Exception as error:  # offline, unknown or gated repo, ...
        raise ConfigError(f"config.teacher.path='{path}' is not a local directory and could not be downloaded from "
                          f"the Hugging Face Hub ({type(error).__name__}); download it and give its directory, or use "
                          "config.teacher.name=autoencoder offline") from None


def load_teacher(config) -> tuple[Teacher, dict]:
    """The teacher config.teacher names and its float32 params (a pytree of arrays)."""
    name, path = config.teacher.name, config.teacher.path
    if name == NONE:
        raise ConfigError("config.teacher.name='none': there is no teacher to load; name one (dinov2, dinov3, "
                          "autoencoder) and its config.teacher.path")
    if name == AUTOENCODER:
        return _autoencoder_teacher(path)
    if name not in VIT_TEACHERS:
        raise ConfigError(f"config.teacher.name='{name}' is not one of: {', '.join(TEACHERS)}")
    module, params = VIT_TEACHERS[name][0](_local_dir(path))
    return Teacher(name, module.config.encoder.hidden_size, _vit_extract(module)), params


def _read_config(name: str, path: str) -> dict:
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        raise ConfigError(f"config.teacher.path='{path}' is not a directory with config.json; give the {name} "
                          "teacher's Hugging Face-format directory")
    return json.loads(config.read_text())


def check_teacher(teacher, image_size: int, uses: dict[str, tuple[int, int]]) -> None:
    """Before any compile: `uses` maps each enabled technique that needs the teacher (its config field)
    to the feature grid it asks for, on images of `image_size` pixels."""
    name, path = teacher.name, teacher.path
    if name == NONE:
        if uses:
            raise ConfigError(f"{next(iter(uses))} needs a teacher and config.teacher.name='none'; set "
                              f"config.teacher.name ({', '.join(TEACHERS[1:])}) and config.teacher.path")
        if path:
            raise ConfigError(f"config.teacher.path='{path}' is set but config.teacher.name='none'; clear the path "
                              "or name the teacher it holds")
        return
    if not path:
        raise ConfigError(f"config.teacher.name='{name}' needs config.teacher.path (its local directory)")
    if name in VIT_TEACHERS:
        if _looks_like_hub_id(path):
            return  # read when loading (online)
        model_type = _read_config(name, path).get("model_type")
        if model_type not in VIT_TEACHERS[name][1]:
            raise ConfigError(f"config.teacher.path='{path}' holds a {model_type!r} model; config.teacher.name='{name}' "
                              f"reads {' or '.join(VIT_TEACHERS[name][1])}")
        return
    config = _read_config(name, path)
    if config.get("_class_name") not in AUTOENCODER_CLASSES:
        raise ConfigError(f"config.teacher.path='{path}' is a {config.get('_class_name')!r}; the autoencoder teacher "
                          f"reads {' or '.join(AUTOENCODER_CLASSES)} (python -m t2ijax.train_autoencoder makes one)")
    downsample = KLConfig.from_diffusers(config).downsample
    if image_size % downsample:
        raise ConfigError(f"config.data.resolution={image_size} is not a multiple of the autoencoder teacher's "
                          f"downsampling {downsample}")
    side = image_size // downsample
    for field, grid in uses.items():
        if side % grid[0] or side % grid[1]:
            raise ConfigError(f"{field} asks the autoencoder teacher for a {grid[0]}x{grid[1]} grid, but its feature "
                              f"map is {side}x{side} ({image_size} px / {downsample}) and pools only to grids dividing "
                              f"{side}; change the denoiser's token grid (patch size) or the teacher")

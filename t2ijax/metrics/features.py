"""Image feature extractors for the Fréchet and MMD metrics: preprocessing plus a frozen network.

Each takes uint8 images [N, H, W, 3] of any size and returns float32 features [N, D]. Under a
mesh the batches are split over its batch axes (the parameters replicated), and the
features stay sharded for the streamed statistics.

| extractor        | network                        | input                                    |
|------------------|--------------------------------|------------------------------------------|
| inception        | FID Inception-v3, pool3        | bilinear to 299 (as pytorch-fid), [-1, 1] |
| random_inception | the same with fixed random weights (offline; not FID) | bilinear to 75, [-1, 1] |
| clip             | CLIP image tower + projection  | bicubic to its size (as CMMD), CLIP mean/std |
| dinov2           | DINOv2 class token             | bicubic to 224, ImageNet mean/std          |
"""
import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t2ijax.errors import ConfigError
from t2ijax.models.vision import clip, dinov2, inception
from t2ijax.models.vision.resize import resize
from t2ijax.sharding import BATCH_AXES

DINOV2_INPUT = 224
# Which config.eval field names each extractor's weights, and what they are.
WEIGHTS_FIELDS = {
    "inception": ("inception_weights", "the FID Inception-v3 weights (.safetensors)"),
    "clip": ("clip_weights", "a CLIP ViT-L/14-336 Hugging Face directory"),
    "dinov2": ("dinov2_weights", "a DINOv2 ViT-L/14-reg Hugging Face directory"),
}


@dataclasses.dataclass
class FeatureExtractor:
    name: str
    dim: int
    embed: Callable[[Any, jax.Array], jax.Array]  # (params, uint8 images) -> features
    params: Any
    fingerprint: str  # names the weights, for caches

    def __post_init__(self):
        self._embed = jax.jit(self.embed)

    def batches(self, images: np.ndarray, batch_size: int, mesh: Mesh | None = None
                ) -> Iterator[tuple[jax.Array, np.ndarray]]:
        """(features [batch_size, D], valid [batch_size]) per batch; the last batch is padded.

        With a mesh, `batch_size` must be a multiple of its batch-axis size.
        """
        params, sharding = self.params, None
        if mesh is not None:
            sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
            params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        batch_size = min(batch_size, len(images)) if mesh is None else batch_size
        for start in range(0, len(images), batch_size):
            chunk = np.asarray(images[start:start + batch_size])
            valid = np.arange(batch_size) < len(chunk)
            chunk = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            yield self._embed(params, chunk if sharding is None else jax.device_put(chunk, sharding)), valid

    def __call__(self, images: np.ndarray, batch_size: int = 64, mesh: Mesh | None = None) -> np.ndarray:
        """All features [N, D] as one numpy array."""
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([np.asarray(features)[valid]
                               for features, valid in self.batches(images, batch_size, mesh)])


def _weights_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of the weight files: changes when they do."""
    files = sorted(path.glob("*")) if path.is_dir() else [path]
    listing = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:12]


def _scaled(images: jax.Array) -> jax.Array:
    return images.astype(jnp.float32) / 255.0


def _normalised(images: jax.Array, size: int, mean, std) -> jax.Array:
    """[0, 255] -> bicubic to size (jax.image.resize, as the CMMD reference) -> (x - mean) / std."""
    x = _scaled(images)
    x = jax.image.resize(x, (*x.shape[:-3], size, size, x.shape[-1]), method="bicubic")
    return (x - jnp.asarray(mean)) / jnp.asarray(std)


def _inception_embed(module: inception.InceptionV3, size: int):
    def embed(params, images):
        x = resize(_scaled(images), (size, size), "bilinear")
        return module.apply({"params": params}, 2.0 * x - 1.0)

    return embed


def inception_extractor(path: str | Path) -> FeatureExtractor:
    module, params = inception.load_inception(path)
    return FeatureExtractor("inception", inception.FEATURES, _inception_embed(module, inception.INPUT_SIZE), params,
                            "inception-" + _weights_fingerprint(Path(path).expanduser()))


def random_inception_extractor(seed: int = 0) -> FeatureExtractor:
    """Random weights owe nothing to 299 px inputs: the smallest size the network takes costs 16x less."""
    module, params = inception.random_inception(seed)
    size = inception.SMALLEST_INPUT
    return FeatureExtractor("random_inception", inception.FEATURES, _inception_embed(module, size), params,
                            f"random_inception-seed{seed}-{size}px")


def clip_extractor(path: str | Path) -> FeatureExtractor:
    module, params = clip.load_clip_vision(path)
    size = module.config.image_size

    def embed(params, images):
        return module.apply({"params": params}, _normalised(images, size, clip.MEAN, clip.STD))

    return FeatureExtractor("clip", module.config.projection_dim, embed, params,
                            "clip-" + _weights_fingerprint(Path(path).expanduser()))


def dinov2_extractor(path: str | Path) -> FeatureExtractor:
    module, params = dinov2.load_dinov2(path)

    def embed(params, images):
        return module.apply({"params": params}, _normalised(images, DINOV2_INPUT, dinov2.MEAN, dinov2.STD))

    return FeatureExtractor("dinov2", module.config.encoder.hidden_size, embed, params,
                            "dinov2-" + _weights_fingerprint(Path(path).expanduser()))


_BUILDERS = {"inception": inception_extractor, "clip": clip_extractor, "dinov2": dinov2_extractor}


def weights_path(name: str, eval_cfg: ml_collections.ConfigDict) -> str | None:
    """Where config.eval says the weights of extractor `name` are (None: it needs none); a
    one-line ConfigError if they are not configured."""
    if name not in WEIGHTS_FIELDS:
        return None
    field, what = WEIGHTS_FIELDS[name]
    if not eval_cfg[field]:
        raise ConfigError(f"needs {what}: set config.eval.{field} (see docs/evaluation.md)")
    return eval_cfg[field]


def load_extractor(name: str, eval_cfg: ml_collections.ConfigDict) -> FeatureExtractor:
    """The extractor `name` with the weights config.eval names."""
    path = weights_path(name, eval_cfg)
    return random_inception_extractor() if path is None else _BUILDERS[name](path)

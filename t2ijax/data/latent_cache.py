"""Latents of the dataset computed once and cached on disk next to the text cache; training reads, never encodes.

A cache directory is keyed by the autoencoder's fingerprint (architecture and weights), the
normalization, the posterior (mode, or one sample per image with a fixed seed) and the dataset,
and holds `meta.json` (what it was built with, the normalization's offset and scale, per-channel
statistics before and after on the statistics sample) and `.npy` shards of normalized latents.
Shards are written atomically and existing ones are kept, so an interrupted build resumes.
With augmentation (t2ijax/data/augmentation.py) every view of a training image has its latents, each
view its own shards, and the augmentation settings are part of the key.

With P processes, process p encodes the missing shards whose number (over all views) is p modulo P,
then all wait for each other and every process reads every shard.
"""
import hashlib
import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from t2ijax import sharding
from t2ijax.data import augmentation
from t2ijax.data.buckets import grid
from t2ijax.data.sources import source_fingerprint
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders.latent_space import LatentSpace
from t2ijax.models.autoencoders.normalization import NORMALIZATIONS, channel_report
from t2ijax.registry import names

SHARD_SIZE = 1024
POSTERIORS = names("latents.posterior")
_POSTERIOR_SEED = 0
_DATA_FIELDS = ("name", "resolution", "num_train", "num_validation")


def _asked(config: ml_collections.ConfigDict, autoencoder) -> dict:
    """What the cache's latents depend on; a cache whose meta.json says otherwise is not used."""
    data = {k: config.data[k] for k in _DATA_FIELDS}
    files = source_fingerprint(config.data)
    if files is not None:
        data["files"] = files
    if config.resolution.buckets:  # a bucket holds other images than the whole dataset at that size
        data.update(buckets=[list(size) for size in grid(config)], aspect_ratios=list(config.data.aspect_ratios))
    data.update(augmentation.settings(config.data))  # nothing without augmentation
    return {"autoencoder": autoencoder.fingerprint, "normalization": config.latents.normalization,
            "posterior": config.latents.posterior, "stats_examples": config.latents.stats_examples, "data": data}


def latent_cache_dir(config: ml_collections.ConfigDict, autoencoder) -> str:
    asked = _asked(config, autoencoder)
    key = hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{autoencoder.fingerprint}-{asked['normalization']}-{asked['posterior']}-{key}"
    return os.path.join(config.data.data_dir, "latent_cache", name)


def _save_atomic(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


class LatentCache:
    """Opens the cache asked for by `config`, creating its meta.json (statistics estimated on
    `train_images`) when it has none; `space` is its latent space, `latents` reads or builds shards."""

    def __init__(self, config: ml_collections.ConfigDict, autoencoder, train_images: np.ndarray | None = None):
        self.config, self.autoencoder = config, autoencoder
        self.directory = latent_cache_dir(config, autoencoder)
        self.batch_size = config.latents.encode_batch_size
        meta = self._meta(train_images)
        self.shard_size = meta["shard_size"]
        self.space = LatentSpace(autoencoder, np.asarray(meta["offset"], np.float32),
                                 np.asarray(meta["scale"], np.float32))

    def _raw_latents(self, images: np.ndarray, first_index: int, stream: int = 0, view: int = 0) -> np.ndarray:
        """uint8 images -> latents drawn from the posterior (`stream`, `view` and `first_index` seed the samples)."""
        key = jax.random.key(_POSTERIOR_SEED)
        key = jax.random.fold_in(key, stream) if stream else key
        key = jax.random.fold_in(key, view) if view else key
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size].astype(np.float32) / 127.5 - 1.0
            posterior = self.autoencoder.encode(batch)
            if self.config.latents.posterior == "sample":
                out.append(posterior.sample(jax.random.fold_in(key, first_index + start)))
            else:
                out.append(posterior.mode())
        return np.concatenate([np.asarray(x, np.float32) for x in out])

    def _meta(self, train_images: np.ndarray | None) -> dict:
        path = os.path.join(self.directory, "meta.json")
        asked = _asked(self.config, self.autoencoder)
        if os.path.exists(path):
            with open(path) as f:
                meta = json.load(f)
            built = {k: meta.get(k) for k in asked}
            if built != asked:
                differs = next(k for k in asked if built[k] != asked[k])
                raise ConfigError(f"latent cache {self.directory} was built with {differs}={built[differs]!r}, "
                                  f"the config asks {asked[differs]!r}; remove that directory or restore the config")
            return meta
        if train_images is None:
            raise ConfigError(f"no latent cache at {self.directory}; training with this config builds it")
        sample = self._raw_latents(train_images[:self.config.latents.stats_examples], first_index=0)
        offset, scale = NORMALIZATIONS.get(self.config.latents.normalization)(self.autoencoder, sample)
        normalized = LatentSpace(self.autoencoder, offset, scale).normalize(sample)
        meta = dict(asked, autoencoder_name=self.config.autoencoder.name, shard_size=SHARD_SIZE, offset=offset.tolist(),
                    scale=scale.tolist(), before=channel_report(sample), after=channel_report(normalized))
        logging.info("latent statistics on %d training images (%s normalization)\n  before: mean %s std %s\n"
                     "  after:  mean %s std %s", len(sample), asked["normalization"], meta["before"]["mean"],
                     meta["before"]["std"], meta["after"]["mean"], meta["after"]["std"])
        os.makedirs(self.directory, exist_ok=True)  # under data.data_dir: local (config.check_local_files)
        _save_atomic(path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
        return meta

    def _shards(self, split: str, images: np.ndarray) -> list[tuple[str, int, int, int, slice]]:
        """(path, first index, stream, view, examples) of every shard of `images` [N, V, H, W, 3]."""
        split_offset = {"train": 0, "validation": 1 << 30}[split]  # distinct posterior samples per split
        height, width = images.shape[2:4]
        square = height == width == self.config.data.resolution
        name, stream = (split, 0) if square else (f"{split}-{height}x{width}", height * 100_003 + width)
        return [(os.path.join(self.directory, f"{name}{f'-view{view}' if view else ''}-{index:05d}.npy"),
                 split_offset + start, stream, view, slice(start, start + self.shard_size))
                for view in range(images.shape[1])
                for index, start in enumerate(range(0, len(images), self.shard_size))]

    def build(self, split: str, images: np.ndarray, process_index: int = 0, process_count: int = 1) -> int:
        """Encodes the missing shards of `images` [N, V, H, W, 3] that are process `process_index`'s
        (shard number modulo `process_count`); returns how many it wrote."""
        written = 0
        for number, (path, first_index, stream, view, examples) in enumerate(self._shards(split, images)):
            if number % process_count != process_index or os.path.exists(path):
                continue
            raw = self._raw_latents(images[examples, view], first_index, stream, view)
            latents = self.space.normalize(raw).astype(np.float32)
            _save_atomic(path, lambda f: np.save(f, latents))
            written += 1
        return written

    def read(self, split: str, images: np.ndarray) -> np.ndarray:
        """The cached latents [N, V, h, w, C] of `images` [N, V, H, W, 3]; every shard must be there."""
        views = [[] for _ in range(images.shape[1])]
        for path, _, _, view, examples in self._shards(split, images):
            shard = np.load(path)
            expected = len(images[examples])
            if len(shard) != expected:
                raise ConfigError(f"latent cache shard {path} holds {len(shard)} examples, expected {expected}; "
                                  "remove it to rebuild")
            views[view].append(shard)
        return np.stack([np.concatenate(shards) for shards in views], axis=1)

    def latents(self, split: str, images: np.ndarray) -> np.ndarray:
        """Model-space latents of `images` (the split's, in order, all of one size: [N, H, W, 3], or
        [N, V, H, W, 3] views -> [N, V, h, w, C]), encoding only the shards not on disk, shared out over
        the processes. Images of another size than data.resolution's square (aspect-ratio buckets,
        evaluation sizes) and views other than the original are shards of their own, with their own
        posterior samples."""
        viewed = images if images.ndim == 5 else images[:, None]
        self.build(split, viewed, jax.process_index(), jax.process_count())
        if jax.process_count() > 1:
            sharding.barrier(f"t2ijax: latent cache built ({split} {viewed.shape[1:4]})",
                             timeout_s=6 * 3600)
        latents = self.read(split, viewed)
        return latents if images.ndim == 5 else latents[:, 0]

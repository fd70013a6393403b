"""The cache step: dataset splits plus cached caption embeddings, ready for the loader."""
import dataclasses
import os
import time

import jax
import ml_collections
import numpy as np

from absl import logging

from t2ijax import sharding
from t2ijax.data import augmentation, buckets, captions
from t2ijax.data.buckets import Size, size_name
from t2ijax.data.latent_cache import LatentCache
from t2ijax.data.sources import SPLITS, USER_FORMATS, load_buckets, load_split
from t2ijax.errors import ConfigError
from t2ijax.data.text_cache import TextCache
from t2ijax.models.autoencoders import PIXEL_SPACE, load_autoencoder
from t2ijax.models.autoencoders.latent_space import LatentSpace
from t2ijax.models.autoencoders.normalization import NORMALIZATIONS
from t2ijax.techniques.frozen import needs_images

ATTRIBUTE_KEYS = ("num_objects", "shape", "colour", "size", "position", "background")


@dataclasses.dataclass
class PreparedData:
    space: LatentSpace                    # what the denoiser's inputs are
    train: dict[Size, dict[str, np.ndarray]]  # per image size (one, or one per bucket): image (pixel space) or
                                              # latent [N, V, ...] per view (and image beside it when a
                                              # technique needs pixels: frozen.needs_images), caption
                                              # [N, V, F] rows of train_text per view and field,
                                              # caption_weights [N, F]
    train_text: np.ndarray                # [U, L, D] embeddings of the training captions, once per unique caption
    train_text_mask: np.ndarray           # [U, L]
    validation: dict[str, np.ndarray]     # image, (latent,) text, text_mask, caption, and attributes if any
    validation_at: dict[Size, dict[str, np.ndarray]]  # the same at each of config.eval.sizes
    report: dict                          # training examples per bucket, and those left out and why
    null_text: np.ndarray                 # [L, D] embedding of the empty caption
    null_mask: np.ndarray                 # [L]
    negative_text: np.ndarray             # [L, D] embedding of config.sampler.negative_prompt
    negative_mask: np.ndarray             # [L]
    prompts: dict[str, np.ndarray]        # caption, text, text_mask of config.sample.prompts


def text_cache_dir(data_cfg: ml_collections.ConfigDict) -> str:
    return os.path.join(data_cfg.data_dir, "text_cache")


def dataset_captions(config) -> list[str]:
    """Every text training, sampling and evaluation will look up for this config's dataset: the fields
    config.data.captions names, in every augmentation view (mirrored views swap left and right)."""
    texts = ["", config.sampler.negative_prompt, *config.sample.prompts]
    views = augmentation.views_of(config.data)
    for split in SPLITS:
        fields = captions.field_captions(config.data, load_split(config.data, split))
        texts += augmentation.view_captions(fields, views if split == "train" else views[:1]).ravel().tolist()
    return texts


def cache_captions(config, mesh=None, rules=None) -> dict:
    """Fills the text cache for `config`; what it holds afterwards, and what this run added."""
    start = time.time()
    cache = TextCache(text_cache_dir(config.data), config.text_encoder, mesh, rules)
    encoded = cache.fill(dataset_captions(config))
    return dict(directory=cache.directory, shape=cache.shape(), encoded=encoded, stored_bytes=cache.stored_bytes,
                padded_bytes=cache.padded_bytes, seconds=time.time() - start)


def latent_space(config: ml_collections.ConfigDict,
                 train_images: np.ndarray | None = None) -> tuple[LatentSpace, LatentCache | None]:
    """The run's latent space and, outside pixel space, its cache (whose normalization statistics are
    estimated on `train_images` when the cache is new)."""
    autoencoder = load_autoencoder(config.autoencoder.name)
    if config.autoencoder.name == PIXEL_SPACE:
        return LatentSpace(autoencoder, *NORMALIZATIONS.get(config.latents.normalization)(autoencoder, None)), None
    cache = LatentCache(config, autoencoder, train_images)
    return cache.space, cache


def model_inputs(batch: dict[str, np.ndarray], space: LatentSpace) -> np.ndarray:
    """x0 of a batch: its cached latents, or in pixel space its images mapped to [-1, 1]."""
    return batch["latent"] if "latent" in batch else space.images_to_latents(batch["image"])


def _build_on_one_process(data_cfg: ml_collections.ConfigDict) -> None:
    """With several processes, process 0 builds a missing dataset while the others wait: two builders
    of one dataset directory race. (Caption embeddings need no such care: every process encodes the
    same captions, a collective over the mesh, and writes the same file atomically.) User datasets build
    their chunks on every process instead (t2ijax/data/user_tfds.py)."""
    if jax.process_count() == 1 or data_cfg.name in USER_FORMATS:
        return
    if jax.process_index() == 0:
        for split in SPLITS:
            load_split(data_cfg, split)
    sharding.barrier("t2ijax: dataset built", timeout_s=6 * 3600)


def _without_small_buckets(groups: dict, global_batch_size: int, report: dict) -> dict:
    """Buckets with fewer examples than one global batch are left out (counted in the report)."""
    small = {size: len(g["image"]) for size, g in groups.items() if len(g["image"]) < global_batch_size}
    if small:
        logging.warning("%d training images in %d bucket(s) smaller than the global batch (%d) are left out: %s",
                        sum(small.values()), len(small), global_batch_size,
                        ", ".join(f"{size_name(size)}: {n}" for size, n in sorted(small.items())))
        report["left_out_small_buckets"] = {size_name(size): n for size, n in sorted(small.items())}
    kept = {size: g for size, g in groups.items() if size not in small}
    if not kept:
        raise ConfigError(f"no bucket holds a global batch ({global_batch_size}) of training images; lower "
                          "data.global_batch_size or add images")
    return kept


def _square_images(train: dict, resolution: int) -> np.ndarray:
    """The images the latent statistics are estimated on: the square bucket's, else the largest bucket's
    (the original views)."""
    size = (resolution, resolution) if (resolution, resolution) in train else max(train, key=lambda s: len(train[s]["image"]))
    return train[size]["image"][:, 0]


def _training_views(groups: dict[Size, dict[str, np.ndarray]], data_cfg: ml_collections.ConfigDict,
                    cache: TextCache) -> tuple[dict[Size, dict[str, np.ndarray]], np.ndarray, np.ndarray]:
    """Every view of every training image with its captions per field, and the text table they index:
    ({size: {image [N, V, ...], caption [N, V, F], caption_weights [N, F]}}, embeddings [U, L, D], mask [U, L])."""
    views = augmentation.views_of(data_cfg)
    texts = {size: augmentation.view_captions(captions.field_captions(data_cfg, group), views)
             for size, group in groups.items()}
    unique = sorted({str(t) for group_texts in texts.values() for t in group_texts.ravel()})
    table, table_mask = cache.lookup(unique)  # the same list on every process: encoding may be a collective
    row = {text: i for i, text in enumerate(unique)}
    to_row = np.vectorize(lambda t: row[str(t)], otypes=[np.int32])
    train = {size: {"image": augmentation.view_images(group["image"], views, data_cfg),
                    "caption": to_row(texts[size]),
                    "caption_weights": captions.field_weights(data_cfg, texts[size][:, 0])}
             for size, group in groups.items()}
    return train, table, table_mask


def check_prepared(config: ml_collections.ConfigDict) -> None:
    """One line saying where it looked, when the data a run prepared (its caption cache first) is not where
    config.data.data_dir says: a command that reads a run never builds them anew somewhere else."""
    store = TextCache(text_cache_dir(config.data), config.text_encoder).directory
    if not os.path.isdir(store):
        raise ConfigError(f"the run's data is not where its config.json says: no caption cache at {store}; run "
                          "where it was trained, or set data.data_dir in its config.json to where its data is")


def prepare(config: ml_collections.ConfigDict, mesh=None, rules=None, build: bool = True) -> PreparedData:
    """Builds what is missing (dataset, caption embeddings, latents) and loads everything into memory.

    Runs the text encoder (its parameters sharded over `mesh` when given) only for captions not
    cached yet: dataset captions, the empty caption, the sample prompts and the negative prompt;
    and the autoencoder only for latent shards not cached yet; training itself never does either.
    `build=False` (commands that read a run) first checks that the run's data is there (`check_prepared`).
    """
    if not build:
        check_prepared(config)
    _build_on_one_process(config.data)
    cache = TextCache(text_cache_dir(config.data), config.text_encoder, mesh, rules)

    def with_text(split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        captions.check_fields(config.data, split)
        texts = split[captions.first_field(config.data)]
        text, mask = cache.lookup(texts)
        out = {"image": split["image"], "text": text, "text_mask": mask, "caption": texts}
        out.update({k: split[k] for k in ATTRIBUTE_KEYS if k in split})
        return out

    groups, report = load_buckets(config.data, "train", buckets.grid(config))
    groups = _without_small_buckets(groups, config.data.global_batch_size, report)
    train, train_text, train_text_mask = _training_views(groups, config.data, cache)
    validation = with_text(load_split(config.data, "validation"))
    validation_at = {tuple(size): with_text(load_split(config.data, "validation", tuple(size)))
                     for size in config.eval.sizes}
    space, latent_cache = latent_space(config, _square_images(train, config.data.resolution))
    if latent_cache is not None:
        keep_images = needs_images(config)  # REPA and the perceptual losses compare with each view's real image
        for group in train.values():
            group["latent"] = latent_cache.latents("train", group["image"] if keep_images else group.pop("image"))
        for split in (validation, *validation_at.values()):
            split["latent"] = latent_cache.latents("validation", split["image"])
    null_text, null_mask = cache.lookup([""])
    negative_text, negative_mask = cache.lookup([config.sampler.negative_prompt])
    prompts = list(config.sample.prompts)
    prompt_text, prompt_mask = cache.lookup(prompts)
    cache.release_encoder()
    return PreparedData(space=space, train=train, train_text=train_text, train_text_mask=train_text_mask,
                        validation=validation, validation_at=validation_at, report=report,
                        null_text=null_text[0], null_mask=null_mask[0],
                        negative_text=negative_text[0], negative_mask=negative_mask[0],
                        prompts={"caption": np.asarray(prompts, object), "text": prompt_text,
                                 "text_mask": prompt_mask})


"""Preprocessing's encode stage: examples -> training records (t2ijax/data/records.py) and their manifest.

Each record set (a split at one resolution and image size, t2ijax/data/manifest.py) is cut into shards of
config.data.records_per_shard examples; process p of P writes the missing shards s with s % P == p, so a
killed job redoes only unfinished shards. A record depends on its example's index alone (augmentation
crops, posterior samples), never on which process wrote it. Process 0 writes the manifest once every
shard is there.

A training record holds every augmentation view's latents (or PNG images: pixel space, or when a technique
compares with real images), the caption embeddings of its distinct captions over views and fields, unpadded
(`text` [T, D], `text_lengths` [U]), which of them each view and field uses (`caption` [V, F]) and the
fields' draw weights. A validation record holds its image, latent, first-field caption and embedding, and
the dataset's ground-truth attributes.
"""
import hashlib
import io
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh
from PIL import Image

from t2ijax import sharding
from t2ijax.data import augmentation, buckets, captions, manifest, records
from t2ijax.data.buckets import Size
from t2ijax.data.sources import USER_FORMATS, ExampleSet, bucket_sets, source_fingerprint, split_set
from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import PIXEL_SPACE, load_autoencoder
from t2ijax.models.autoencoders.latent_space import LatentSpace
from t2ijax.models.autoencoders.normalization import NORMALIZATIONS, channel_report
from t2ijax.registry import names
from t2ijax.training import phases

STORAGE_DTYPES = names("data.text_dtype")  # data.latent_dtype's too
POSTERIORS = names("latents.posterior")
# The synthetic datasets' scene attributes, kept with each example for the evaluator (shapes' and compose's)
ATTRIBUTE_KEYS = ("num_objects", "shape", "colour", "size", "position", "background", "category", "relation", "cell")
TEXTS_SET = "texts"
LAYOUT = "layout.json"
_POSTERIOR_SEED = 0
_SPLIT_OFFSET = {"train": 0, "validation": 1 << 30}  # distinct posterior samples per split


def storage_dtype(name: str) -> np.dtype:
    return records.dtype_named(name)


def to_storage(values: np.ndarray, dtype: np.dtype, what) -> np.ndarray:
    """`values` cast to `dtype`; a finite value the dtype cannot hold is a ConfigError naming `what(index)`."""
    with np.errstate(over="ignore"):
        stored = values.astype(dtype)
    overflow = np.isfinite(values) & ~np.isfinite(stored.astype(np.float32))
    if overflow.any():
        at = np.argwhere(overflow)[0]
        raise ConfigError(f"{what(int(at[0]))} holds {values[tuple(at)]:.4g}, outside {dtype.name}'s range; store "
                          "it as bfloat16 or float32 (config.data.text_dtype / latent_dtype) or pick another layer")
    return stored


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def local_mesh() -> Mesh:
    """This process's devices: encoders run on each host's own chips, the batch split over them."""
    return Mesh(np.asarray(jax.local_devices()).reshape(-1, 1, 1), sharding.MESH_AXES)


class Encoders:
    """The config's text encoder (loaded on first use) and autoencoder, with the storage dtypes."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.autoencoder = load_autoencoder(config.autoencoder.name)
        self.text_dtype = storage_dtype(config.data.text_dtype)
        self.latent_dtype = storage_dtype(config.data.latent_dtype)
        self._text = None
        self.captions = self.truncated = 0  # encoded here, and of those longer than text_encoder.max_length

    @property
    def text(self):
        if self._text is None:
            from t2ijax.models.text import text_encoder_from_config

            self._text = text_encoder_from_config(self.config.text_encoder, local_mesh(),
                                                  sharding.logical_rules(self.config.sharding_rules))
        return self._text

    def text_fingerprint(self) -> str:
        """A digest of the text encoder's weights ("none" for the no-text control)."""
        params = getattr(self.text, "params", None)
        if params is None:
            return self.text.name
        digest = hashlib.sha256()
        for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda item: str(item[0])):
            digest.update(str(path).encode() + np.asarray(leaf).tobytes())
        return digest.hexdigest()[:16]

    def text_tokens(self, texts: list[str], where) -> list[np.ndarray]:
        """Each text's real tokens [n, D] in the storage dtype; `where(i)` names text i in an overflow error."""
        if not texts:
            return []
        embeddings, mask = self._encoded(texts)
        self.captions += len(texts)
        self.truncated += int((self.text.token_counts(texts) > self.config.text_encoder.max_length).sum())
        layer = self.config.text_encoder.layer
        stored = to_storage(embeddings, self.text_dtype, lambda i: f"{where(i)} (text_encoder.layer={layer})")
        return [stored[i][mask[i]] for i in range(len(texts))]

    def _encoded(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's (embeddings, mask), each text encoded among texts of its own token width only (the
        encoder cuts a batch to its longest text, rounded up to 8), so that what else a shard holds never
        changes the shapes, hence the rounding, that a caption's embedding comes from."""
        if not hasattr(self.text, "tokenize"):  # the no-text control
            return self.text.encode(texts)
        lengths = np.maximum(self.text.tokenize(texts)[1].sum(axis=1), 1)
        widths = -(-lengths // 8)
        embeddings = np.zeros((len(texts), self.text.max_length, self.text.hidden_size), np.float32)
        mask = np.zeros((len(texts), self.text.max_length), bool)
        for width in np.unique(widths):
            rows = np.flatnonzero(widths == width)
            embeddings[rows], mask[rows] = self.text.encode([texts[i] for i in rows])
        return embeddings, mask

    def raw_latents(self, images: np.ndarray, first_index: int, stream: int = 0, view: int = 0) -> np.ndarray:
        """uint8 images (examples first_index, first_index + 1, ... of their set) -> float32 latents: the
        posterior's mode, or one sample whose noise is seeded by the example's index alone (not by the batch)."""
        key = jax.random.key(_POSTERIOR_SEED)
        key = jax.random.fold_in(key, stream) if stream else key
        key = jax.random.fold_in(key, view) if view else key
        out, batch_size = [], self.config.latents.encode_batch_size
        for start in range(0, len(images), batch_size):
            posterior = self.autoencoder.encode(images[start:start + batch_size].astype(np.float32) / 127.5 - 1.0)
            if self.config.latents.posterior == "sample" and posterior.logvar is not None:
                keys = [jax.random.fold_in(key, first_index + start + i) for i in range(len(posterior.mean))]
                noise = jnp.stack([jax.random.normal(k, posterior.mean.shape[1:], posterior.mean.dtype) for k in keys])
                out.append(posterior.mean + jnp.exp(0.5 * posterior.logvar) * noise)
            else:
                out.append(posterior.mode())
        return np.concatenate([np.asarray(x, np.float32) for x in out])


def latent_statistics(encoders: "Encoders | None", train_images: np.ndarray | None,
                      config: ml_collections.ConfigDict | None = None) -> dict:
    """The normalization (offset, scale) and channel statistics before and after, on the first
    latents.stats_examples training images; pixel space has its fixed normalization (no encoders needed)."""
    config = encoders.config if encoders is not None else config
    if config.autoencoder.name == PIXEL_SPACE:
        offset, scale = NORMALIZATIONS.get(config.latents.normalization)(load_autoencoder(PIXEL_SPACE), None)
        return {"offset": offset.tolist(), "scale": scale.tolist()}
    autoencoder = encoders.autoencoder
    sample = encoders.raw_latents(train_images[:config.latents.stats_examples], first_index=0)
    offset, scale = NORMALIZATIONS.get(config.latents.normalization)(autoencoder, sample)
    normalized = LatentSpace(autoencoder, offset, scale).normalize(sample)
    return {"offset": np.asarray(offset).tolist(), "scale": np.asarray(scale).tolist(),
            "before": channel_report(sample), "after": channel_report(np.asarray(normalized))}


def latent_space(autoencoder, statistics: dict) -> LatentSpace:
    return LatentSpace(autoencoder, np.asarray(statistics["offset"], np.float32),
                       np.asarray(statistics["scale"], np.float32))


class SetWriter:
    """Writes one record set's shards: `examples(start, stop)` makes the records of examples [start, stop)."""

    def __init__(self, directory: str, name: str, count: int, per_shard: int):
        self.directory = os.path.join(directory, name)
        self.count, self.per_shard = count, per_shard

    def shards(self) -> list[tuple[str, int]]:
        return [(records.shard_name(s), min(self.per_shard, self.count - s * self.per_shard))
                for s in range(math.ceil(self.count / self.per_shard))]

    def write(self, examples, process_index: int, process_count: int) -> int:
        os.makedirs(self.directory, exist_ok=True)
        written = 0
        for s, (name, size) in enumerate(self.shards()):
            path = os.path.join(self.directory, name)
            if s % process_count != process_index or os.path.exists(path):
                continue
            start = s * self.per_shard
            records.write_shard(path, examples(start, start + size))
            written += 1
        return written


def _stream(size: Size, resolution: int) -> int:
    """Posterior samples of another image size than the square are drawn from a stream of their own."""
    return 0 if size == (resolution, resolution) else size[0] * 100_003 + size[1]


def train_examples(encoders: Encoders, source: ExampleSet, space: LatentSpace, name: str,
                   size: Size, resolution: int, keep_images: bool):
    data_cfg = encoders.config.data
    views = augmentation.views_of(data_cfg)
    fields = [field for field, _ in data_cfg.captions]

    def examples(start: int, stop: int) -> list[dict]:
        group = source.read(start, stop)
        viewed = augmentation.view_images(group["image"], views, data_cfg, first=start)
        texts = augmentation.view_captions(captions.field_captions(data_cfg, group), views)  # [n, V, F]
        weights = captions.field_weights(data_cfg, texts[:, 0])
        unique = sorted({str(t) for t in texts.ravel()})
        first_use = {}  # text -> "caption field 'F' of SET example I": where an overflow error points
        for i, row in enumerate(texts):
            for (_, f), text in np.ndenumerate(row):
                first_use.setdefault(str(text), f"caption field '{fields[f]}' of {name} example {start + i}")
        tokens = dict(zip(unique, encoders.text_tokens(unique, lambda j: first_use[unique[j]])))
        latents = None
        if encoders.config.autoencoder.name != PIXEL_SPACE:
            raw = [encoders.raw_latents(viewed[:, v], _SPLIT_OFFSET["train"] + start, _stream(size, resolution), v)
                   for v in range(len(views))]
            normalized = np.stack([np.asarray(space.normalize(r), np.float32) for r in raw], axis=1)
            latents = to_storage(normalized, encoders.latent_dtype, lambda i: f"latent of {name} example {start + i}")
        out = []
        for i in range(stop - start):
            distinct = list(dict.fromkeys(str(t) for t in texts[i].ravel()))
            index = {text: j for j, text in enumerate(distinct)}
            record = {"key": f"{name}#{start + i}",
                      "text": np.concatenate([tokens[t] for t in distinct]),
                      "text_lengths": np.asarray([len(tokens[t]) for t in distinct], np.int32),
                      "caption": np.vectorize(lambda t: index[str(t)], otypes=[np.int32])(texts[i]),
                      "caption_weights": weights[i]}
            if latents is not None:
                record["latent"] = latents[i]
            if keep_images or latents is None:
                record["image"] = [png(view) for view in viewed[i]]
            out.append(record)
        return out

    return examples


def validation_examples(encoders: Encoders, source: ExampleSet, space: LatentSpace, name: str,
                        size: Size, resolution: int):
    data_cfg = encoders.config.data

    def examples(start: int, stop: int) -> list[dict]:
        split = source.read(start, stop)
        captions.check_fields(data_cfg, split)
        texts = [str(t) for t in split[captions.first_field(data_cfg)]]
        images = split["image"]
        tokens = encoders.text_tokens(texts, lambda i: f"caption of {name} example {start + i}")
        latents = None
        if encoders.config.autoencoder.name != PIXEL_SPACE:
            raw = encoders.raw_latents(images, _SPLIT_OFFSET["validation"] + start, _stream(size, resolution))
            latents = to_storage(np.asarray(space.normalize(raw), np.float32), encoders.latent_dtype,
                                 lambda i: f"latent of {name} example {start + i}")
        out = []
        for i in range(stop - start):
            record = {"key": f"{name}#{start + i}", "image": png(images[i]), "caption": texts[i],
                      "text": tokens[i], "text_lengths": np.asarray([len(tokens[i])], np.int32)}
            record.update({k: np.asarray(split[k][i]) for k in ATTRIBUTE_KEYS if k in split})
            if latents is not None:
                record["latent"] = latents[i]
            out.append(record)
        return out

    return examples


def text_examples(encoders: Encoders, texts: list[str]) -> list[dict]:
    """The texts sampling and training look up by caption: the empty caption, the negative prompt, the prompts."""
    tokens = encoders.text_tokens(texts, lambda i: f"prompt {texts[i]!r}")
    return [{"caption": text, "text": t, "text_lengths": np.asarray([len(t)], np.int32)}
            for text, t in zip(texts, tokens)]


def lookup_texts(config: ml_collections.ConfigDict) -> list[str]:
    return list(dict.fromkeys(["", config.sampler.negative_prompt, *config.sample.prompts]))


def _opened(data_cfg: ml_collections.ConfigDict, open_sets):
    """`open_sets()` (which builds a missing synthetic dataset): process 0 first while the others wait, since two
    builders of one TFDS directory race. User datasets build their chunks on every process (user_tfds.py)."""
    if jax.process_count() > 1 and data_cfg.name not in USER_FORMATS:
        if jax.process_index() == 0:
            open_sets()
        sharding.barrier("t2ijax: dataset built")
    return open_sets()


def _complete(directory: str, done: dict, name: str) -> bool:
    """Set `name` is in the manifest and every shard of it on disk (a lost shard is written again)."""
    return name in done["sets"] and all(os.path.exists(os.path.join(directory, name, shard))
                                        for shard, _ in done["sets"][name]["shards"])


def _check_layout(directory: str, per_shard: int) -> None:
    """A rerun cuts its shards as the first run did (the shards on disk are kept)."""
    path = os.path.join(directory, LAYOUT)
    if os.path.exists(path):
        with open(path) as f:
            first = json.load(f)["records_per_shard"]
        if first != per_shard:
            raise ConfigError(f"records at {directory} are cut into shards of {first} examples; rerun with "
                              f"--config.data.records_per_shard={first}, or preprocess into another --out")
        return
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"records_per_shard": per_shard}, f)
    os.replace(tmp, path)  # every process writes the same


def write(config: ml_collections.ConfigDict) -> tuple[str, dict]:
    """Writes the records `config` trains, evaluates and samples with that its records directory
    (manifest.records_dir) lacks, on every process (each its shards), and returns (directory, manifest)."""
    directory = manifest.records_dir(config)
    existing = manifest.read(directory)
    fingerprint = source_fingerprint(config.data)
    if existing is not None:
        manifest.check(existing, config, directory)
        if existing["source_fingerprint"] != fingerprint:
            raise ConfigError(f"records at {directory} were made from other files than config.data.path="
                              f"'{config.data.path}' holds now; preprocess into another --out")
    process_index, process_count = jax.process_index(), jax.process_count()
    encoders = Encoders(config)
    per_shard = config.data.records_per_shard
    _check_layout(directory, per_shard)
    new = {"format": manifest.FORMAT, "made_with": manifest.made_with(config), "source_fingerprint": fingerprint,
           "sets": {}, "latents": {}, "report": {}}
    done = json.loads(json.dumps(existing or new))
    made_by = done.setdefault("autoencoder_fingerprint", encoders.autoencoder.fingerprint)
    if made_by != encoders.autoencoder.fingerprint:
        raise ConfigError(f"records at {directory} were made with autoencoder {made_by}, config.autoencoder.name="
                          f"{config.autoencoder.name!r} is {encoders.autoencoder.fingerprint} (other weights); "
                          "preprocess into another --out")
    final = config.data.resolution
    by_resolution = {p.resolution: phases.phase_config(config, p) for p in phases.phases(config)}
    for resolution, res_config in sorted(by_resolution.items()):
        wanted = [manifest.set_name("train", resolution, s) for s in buckets.grid(res_config)]
        if resolution == final:
            wanted += [manifest.set_name("validation", resolution, tuple(s)) for s in
                       ((final, final), *config.eval.sizes)]
        if all(_complete(directory, done, w) for w in wanted) and str(resolution) in done["latents"]:
            continue
        grid = buckets.grid(res_config)
        sets, report = _opened(res_config.data, lambda: bucket_sets(res_config.data, "train", grid))
        square = (resolution, resolution)
        stats_set = sets[square if square in sets else max(sets, key=lambda s: sets[s].count)]
        statistics = done["latents"].get(str(resolution)) or latent_statistics(
            encoders, stats_set.read(0, min(stats_set.count, config.latents.stats_examples))["image"])
        space = latent_space(encoders.autoencoder, statistics)
        keep_images = done["made_with"]["images"]
        for size, source in sets.items():
            name = manifest.set_name("train", resolution, size)
            writer = SetWriter(directory, name, source.count, per_shard)
            written = writer.write(train_examples(encoders, source, space, name, size, resolution, keep_images),
                                   process_index, process_count)
            logging.info("records %s: %d examples, %d shards written here", name, writer.count, written)
            done["sets"][name] = {"count": writer.count, "shards": writer.shards()}
        done["latents"][str(resolution)] = statistics
        done["report"][str(resolution)] = report
        if resolution == final:
            for size in dict.fromkeys([square, *(tuple(s) for s in config.eval.sizes)]):
                name = manifest.set_name("validation", resolution, size)
                source = _opened(res_config.data, lambda: split_set(res_config.data, "validation", size))
                writer = SetWriter(directory, name, source.count, per_shard)
                writer.write(validation_examples(encoders, source, space, name, size, resolution),
                             process_index, process_count)
                done["sets"][name] = {"count": writer.count, "shards": writer.shards()}
    if encoders.truncated:
        logging.warning("%d of %d captions encoded here have more than config.text_encoder.max_length=%d tokens: "
                        "they are truncated, only their first tokens reach the model", encoders.truncated,
                        encoders.captions, config.text_encoder.max_length)
    texts = list(dict.fromkeys([*done.get("texts", []), *lookup_texts(config)]))
    if done == existing and texts == existing.get("texts") and _complete(directory, done, TEXTS_SET):
        return directory, existing
    sharding.barrier("t2ijax: records written")
    if process_index == 0:
        text_set = os.path.join(directory, TEXTS_SET)
        os.makedirs(text_set, exist_ok=True)
        records.write_shard(os.path.join(text_set, records.shard_name(0)), text_examples(encoders, texts))
        done["sets"][TEXTS_SET] = {"count": len(texts), "shards": [[records.shard_name(0), len(texts)]]}
        done.update(texts=texts, text_dim=int(encoders.text.hidden_size), max_length=config.text_encoder.max_length,
                    text_encoder_weights=encoders.text_fingerprint())
        manifest.write(directory, done)
    sharding.barrier("t2ijax: manifest written")
    return directory, manifest.read(directory)

"""Training batches streamed from records with Grain: each process reads only its rows of each global batch.

The batch of step k is a function of (seed, k) alone (t2ijax/data/order.py: the bucket, the examples,
each one's augmentation view and caption field), so resuming needs nothing but the step: the stream
restarts there. `StepBatches` is a Grain MapDataset over steps; its iterator reads and decodes upcoming
batches in threads (config.data.read_threads) or worker processes (config.data.read_workers) while the
device trains on the current one.
"""
import io
import threading

import grain
import ml_collections
import numpy as np
from absl import flags
from PIL import Image

from t2ijax.data import records
from t2ijax.data.order import BatchOrder, choose

BAD_RECORDS = "bad_records"  # how many corrupt records the next readable ones stood in for (data.bad_records=skip)


def pad_text(tokens: list[np.ndarray], max_length: int, dim: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Unpadded token embeddings [n_i, D] -> [B, max_length, D] (zeros after each caption's tokens), mask."""
    text = np.zeros((len(tokens), max_length, dim), dtype)
    mask = np.zeros((len(tokens), max_length), bool)
    for i, t in enumerate(tokens):
        text[i, :len(t)], mask[i, :len(t)] = t, True
    return text, mask


def caption_tokens(record: dict, j: int) -> np.ndarray:
    """The tokens of a record's j-th distinct caption."""
    starts = np.concatenate([[0], np.cumsum(record["text_lengths"])])
    return record["text"][starts[j]:starts[j + 1]]


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def model_inputs(batch: dict[str, np.ndarray], space) -> np.ndarray:
    """x0 of a batch: its latents, or in pixel space its images mapped to [-1, 1]."""
    return batch["latent"] if "latent" in batch else space.images_to_latents(batch["image"])


def open_sets(directory: str, found: dict, names: list[str], skip_bad: bool) -> list[records.RecordSet]:
    return [records.RecordSet(f"{directory}/{name}", [tuple(s) for s in found["sets"][name]["shards"]], skip_bad)
            for name in names]


class StepBatches:
    """The local batches of one training phase, by step: {"latent" | "image" (uint8), "text", "text_mask"}.

    `sets` are the phase's record sets (one per bucket, in the grid's order); `images` asks for the
    pixels beside the latents (techniques that compare with real images; pixel space always has them).
    """

    def __init__(self, sets: list[records.RecordSet], global_batch_size: int, seed, max_length: int, text_dim: int,
                 latents: bool, images: bool, process_index: int = 0, process_count: int = 1):
        self.sets, self.max_length, self.text_dim = sets, max_length, text_dim
        self.latents, self.images = latents, images
        self.order = BatchOrder([len(s) for s in sets], global_batch_size, seed, process_index, process_count)
        self._lock = threading.Lock()  # the order caches epochs; Grain's threads ask for steps at once

    def __getstate__(self):  # worker processes get their own lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        with self._lock:
            group, indices, draws = self.order.draw(int(step))
        return self._batch(group, indices, draws)

    def group_batch(self, group: int) -> dict[str, np.ndarray]:
        """A batch of `group`'s first examples (their first view and field): the shapes its batches have."""
        size = self.order.global_batch_size // self.order.process_count
        return self._batch(group, np.arange(size) % len(self.sets[group]), np.zeros((size, 2)))

    def _batch(self, group: int, indices: np.ndarray, draws: np.ndarray) -> dict[str, np.ndarray]:
        examples, skipped = self.sets[group].read_counted(indices)
        num_views = len(examples[0]["caption"])
        view, field = choose(num_views, np.stack([e["caption_weights"] for e in examples]), draws)
        tokens = [caption_tokens(e, int(e["caption"][v, f])) for e, v, f in zip(examples, view, field)]
        text, mask = pad_text(tokens, self.max_length, self.text_dim, examples[0]["text"].dtype)
        batch = {"text": text, "text_mask": mask, BAD_RECORDS: np.int64(skipped)}
        if self.latents:
            batch["latent"] = np.stack([e["latent"][v] for e, v in zip(examples, view)]).astype(np.float32)
        if self.images:
            batch["image"] = np.stack([decode_png(e["image"][v]) for e, v in zip(examples, view)])
        return batch

    def stream(self, start: int, stop: int, data_cfg: ml_collections.ConfigDict) -> grain.IterDataset:
        """Batches of steps [start, stop), read ahead as config.data says."""
        steps = grain.MapDataset.range(start, stop).map(self)
        if data_cfg.read_workers:
            if not flags.FLAGS.is_parsed():  # Grain's workers read its absl flags: defaults outside a CLI
                flags.FLAGS.mark_as_parsed()
            return steps.to_iter_dataset().mp_prefetch(
                grain.MultiprocessingOptions(num_workers=data_cfg.read_workers,
                                             per_worker_buffer_size=data_cfg.prefetch))
        return steps.to_iter_dataset(grain.ReadOptions(num_threads=data_cfg.read_threads,
                                                       prefetch_buffer_size=data_cfg.prefetch))


def phase_batches(config: ml_collections.ConfigDict, directory: str, found: dict, set_names: list[str],
                  global_batch_size: int, seed, process_index: int, process_count: int) -> StepBatches:
    from t2ijax.models.autoencoders import PIXEL_SPACE
    from t2ijax.techniques.frozen import needs_images

    pixel_space = config.autoencoder.name == PIXEL_SPACE
    sets = open_sets(directory, found, set_names, config.data.bad_records == "skip")
    return StepBatches(sets, global_batch_size, seed, found["max_length"], found["text_dim"],
                       latents=not pixel_space, images=pixel_space or needs_images(config),
                       process_index=process_index, process_count=process_count)


def read_set(directory: str, found: dict, name: str, skip_bad: bool = False, count: int | None = None) -> list[dict]:
    """The first `count` records (all by default) of set `name`, decoded."""
    (records_set,) = open_sets(directory, found, [name], skip_bad)
    return records_set.read(range(len(records_set) if count is None else min(count, len(records_set))))

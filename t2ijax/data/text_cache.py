"""Caption embeddings computed once and cached on disk; training reads, never encodes.

One store per encoder setting, `<cache_dir>/text-<key>/`, the key a hash of every
`config.text_encoder` field that changes an embedding (all but `cache_unpadded`, which only
changes how they are stored). A store is a set of parts, each an .npz of captions and their
embeddings, written once (atomically) and never changed. A lookup reads the parts it has not
read yet, encodes only the captions none of them holds and adds those as new parts.

A part is padded (`embeddings` [N, L, D], `mask` [N, L]) or unpadded (`tokens` [T, D], the real
tokens of every caption one after another, and `lengths` [N]); unpadded parts are padded back on
load to exactly the padded arrays (padding is zero and every encoder pads on the right).
Embeddings are float16: half the disk and memory, far below the noise of training.
"""
import hashlib
import json
import os

import ml_collections
import numpy as np
from absl import logging

from t2ijax.errors import StorageError
from t2ijax.models.text.encoder import warn_truncated

STORAGE_ONLY = ("cache_unpadded",)
PART_CAPTIONS = 8192  # captions encoded and written at a time: an interrupted fill keeps its finished parts


def settings_key(text_cfg: ml_collections.ConfigDict) -> str:
    """The text cache's key: a digest of every text_encoder field but the storage-only ones."""
    settings = sorted((k, v) for k, v in text_cfg.items() if k not in STORAGE_ONLY)
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:20]


def _unpad(embeddings: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    lengths = mask.sum(axis=1)
    if not (mask == (np.arange(mask.shape[1]) < lengths[:, None])).all():
        raise ValueError("unpadded text cache parts need masks padded on the right")
    return {"tokens": embeddings[mask], "lengths": lengths.astype(np.int32)}


def _pad(tokens: np.ndarray, lengths: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.arange(max_length) < lengths[:, None]
    embeddings = np.zeros((len(lengths), max_length, tokens.shape[-1]), tokens.dtype)
    embeddings[mask] = tokens
    return embeddings, mask


def _save_atomic(path: str, **arrays) -> None:
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise StorageError(f"caption cache {path} could not be written ({error.strerror}); the entries already "
                           "cached are untouched: free space or set config.data.data_dir to a writable disk") from error


class TextCache:
    """Looks up (embeddings, mask) for lists of texts, encoding only what is not cached."""

    def __init__(self, cache_dir: str, text_cfg: ml_collections.ConfigDict, mesh=None, rules=None):
        """`mesh` and `rules` (optional) shard the encoder's parameters when it has to run."""
        self.directory = os.path.join(cache_dir, f"text-{settings_key(text_cfg)}")
        self.text_cfg = text_cfg
        self.mesh, self.rules = mesh, rules
        self._encoder = None
        self._parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # file name -> embeddings, mask
        self._where: dict[str, tuple[str, int]] = {}                # text -> file name, row
        self.stored_bytes = self.padded_bytes = 0                   # arrays of the parts read

    def _encoder_loaded(self):
        if self._encoder is None:
            from t2ijax.models.text import text_encoder_from_config

            self._encoder = text_encoder_from_config(self.text_cfg, self.mesh, self.rules)
        return self._encoder

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self._encoder_loaded().encode(texts)

    def _read_new_parts(self) -> None:
        names = sorted(os.listdir(self.directory)) if os.path.isdir(self.directory) else []
        for name in names:
            if not name.startswith("part-") or not name.endswith(".npz") or name in self._parts:
                continue
            with np.load(os.path.join(self.directory, name)) as part:
                stored = {key: part[key] for key in part.files}
            texts = stored.pop("texts").tolist()
            if "tokens" in stored:
                embeddings, mask = _pad(stored["tokens"], stored["lengths"], self.text_cfg.max_length)
            else:
                embeddings, mask = stored["embeddings"], stored["mask"]
            self._parts[name] = embeddings, mask
            self._where.update((text, (name, row)) for row, text in enumerate(texts))
            self.stored_bytes += sum(array.nbytes for array in stored.values())
            self.padded_bytes += embeddings.nbytes + mask.nbytes

    def _write_part(self, texts: list[str], embeddings: np.ndarray, mask: np.ndarray) -> None:
        arrays = _unpad(embeddings, mask) if self.text_cfg.cache_unpadded else {"embeddings": embeddings, "mask": mask}
        # Named by its texts: processes that encode the same captions write the same file.
        name = f"part-{hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:20]}.npz"
        os.makedirs(self.directory, exist_ok=True)  # under data.data_dir: local (config.check_local_files)
        _save_atomic(os.path.join(self.directory, name), texts=np.asarray(texts, dtype=str), **arrays)

    def fill(self, texts) -> int:
        """Encodes and stores the texts not cached yet; returns how many that was."""
        self._read_new_parts()
        missing = sorted({str(t) for t in texts} - self._where.keys())
        if missing:
            logging.info("encoding %d captions with text encoder %s (%d cached under %s)", len(missing),
                         self.text_cfg.name, len(self._where), self.directory)
            warn_truncated(self._encoder_loaded(), missing)
        for start in range(0, len(missing), PART_CAPTIONS):
            chunk = missing[start:start + PART_CAPTIONS]
            embeddings, mask = self._encode(chunk)
            self._write_part(chunk, embeddings.astype(np.float16), mask)
        if missing:
            self._read_new_parts()
        return len(missing)

    def lookup(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Returns float16 embeddings [N, L, D] and bool mask [N, L] for `texts`, in order."""
        texts = [str(t) for t in texts]
        if not texts:
            embeddings, mask = self._encode([])
            return embeddings.astype(np.float16), mask
        self.fill(texts)
        where = [self._where[t] for t in texts]
        parts = np.asarray([name for name, _ in where], dtype=str)
        rows = np.asarray([row for _, row in where], dtype=np.int64)
        some_embeddings, some_mask = next(iter(self._parts.values()))
        embeddings = np.zeros((len(texts), *some_embeddings.shape[1:]), some_embeddings.dtype)
        mask = np.zeros((len(texts), *some_mask.shape[1:]), bool)
        for name in np.unique(parts):
            chosen = parts == name
            part_embeddings, part_mask = self._parts[name]
            embeddings[chosen], mask[chosen] = part_embeddings[rows[chosen]], part_mask[rows[chosen]]
        return embeddings, mask

    def shape(self) -> tuple[int, ...]:
        """[captions, L, D] of everything cached under these settings (read so far)."""
        some_embeddings = next(iter(self._parts.values()))[0]
        return (len(self._where), *some_embeddings.shape[1:])

    def release_encoder(self) -> None:
        self._encoder = None

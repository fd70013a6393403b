"""Caption embeddings computed once and cached on disk; training reads, never encodes.

Entries are keyed by every `config.text` field (encoder, token length, output layer, init,
dtype, ...) and the exact texts, so a changed caption field, prompt list or encoder setting
can never reuse a stale file. Embeddings are stored
in float16 (half the disk and memory; far below the noise of training).
"""
import hashlib
import json
import os

import ml_collections
import numpy as np

from t2ijax.errors import StorageError


def _key(texts: list[str], text_cfg: ml_collections.ConfigDict) -> str:
    h = hashlib.sha256(json.dumps([sorted(text_cfg.items()), texts]).encode())
    return h.hexdigest()[:20]


def _save_atomic(path: str, **arrays) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.npz"
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
        self.cache_dir = cache_dir
        self.text_cfg = text_cfg
        self.mesh, self.rules = mesh, rules
        self._encoder = None

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self._encoder is None:
            from t2ijax.models.text import text_encoder_from_config

            self._encoder = text_encoder_from_config(self.text_cfg, self.mesh, self.rules)
        return self._encoder.encode(texts)

    def lookup(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Returns float16 embeddings [N, L, D] and bool mask [N, L] for `texts`, in order."""
        texts = [str(t) for t in texts]
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        unique = unique.tolist()
        path = os.path.join(self.cache_dir, f"text-{_key(unique, self.text_cfg)}.npz")
        if os.path.exists(path):
            with np.load(path) as f:
                emb, mask = f["embeddings"], f["mask"]
        else:
            emb, mask = self._encode(unique)
            emb = emb.astype(np.float16)
            os.makedirs(self.cache_dir, exist_ok=True)
            _save_atomic(path, embeddings=emb, mask=mask)
        return emb[inverse], mask[inverse]

    def release_encoder(self) -> None:
        self._encoder = None

"""What training and sampling see of a text encoder: captions in, (embeddings, mask) out."""
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t2ijax.errors import ConfigError
from t2ijax.models.text.cleaning import no_cleaning

NO_TEXT = "none"


def check_max_length(max_length: int, positions: int | None, name: str) -> None:
    """`positions`: the encoder's position table size (None: no table to run out of)."""
    if positions is not None and max_length > positions:
        raise ConfigError(f"text_encoder.max_length={max_length} exceeds the {positions} positions of text encoder "
                          f"'{name}' (max_position_embeddings in its config.json); use at most {positions}")


class TextEncoder:
    """Frozen captions -> (hidden states [B, max_length, D], token mask [B, max_length]).

    With a `mesh`, the parameters are expected sharded over it and the outputs come back
    replicated (readable on every host).
    """

    def __init__(self, module, params: Any, tokenizer: Callable | None, max_length: int, name: str,
                 mesh: Mesh | None = None, clean: Callable[[str], str] = no_cleaning):
        check_max_length(max_length, module.config.max_positions, name)
        self.module, self.params, self.tokenizer = module, params, tokenizer
        self.max_length, self.name, self.clean = max_length, name, clean
        self.hidden_size = module.config.hidden_size
        replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
        self._apply = jax.jit(module.apply, out_shardings=replicated)
        self._pool = jax.jit(functools.partial(module.apply, method="pooled"), out_shardings=replicated)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids int32 and mask bool, both [B, max_length] (cleaned, padded and truncated)."""
        if not texts:  # the tokenizer fails on an empty batch
            return np.zeros((0, self.max_length), np.int32), np.zeros((0, self.max_length), bool)
        tokens = self.tokenizer([self.clean(text) for text in texts], padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="np")
        return tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(bool)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """[B] tokens of each text before truncation to max_length (special tokens included)."""
        if not texts:
            return np.zeros(0, np.int64)
        ids = self.tokenizer([self.clean(text) for text in texts], truncation=False, verbose=False)["input_ids"]
        return np.array([len(row) for row in ids], np.int64)

    def encode_tokens(self, input_ids: jax.Array | np.ndarray,
                      attention_mask: jax.Array | np.ndarray) -> jax.Array:
        """Output hidden state [B, L, D] float32; compiled once per input shape."""
        return self._apply({"params": self.params}, input_ids, attention_mask)

    def pool_tokens(self, input_ids: jax.Array | np.ndarray, attention_mask: jax.Array | np.ndarray) -> jax.Array:
        """The pooled output [B, D] float32 of families that have one (CLIP)."""
        if not hasattr(self.module, "pooled"):
            raise ConfigError(f"text encoder '{self.name}' has no pooled output (CLIP's text encoder has one)")
        return self._pool({"params": self.params}, input_ids, attention_mask)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings float32 [B, max_length, D] with padded positions zeroed, and the mask.

        Texts are encoded shortest first, each batch cut to its longest text rounded up to a
        multiple of 8 tokens: outputs at real tokens do not depend on right padding, so short
        captions cost less, and at most max_length / 8 batch shapes are ever compiled.
        """
        ids, mask = self.tokenize(texts)
        lengths = mask.sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        step = max(1, min(batch_size, len(ids)))
        embeddings = np.zeros((len(ids), self.max_length, self.hidden_size), np.float32)
        for start in range(0, len(ids), step):
            rows = order[start:start + step]
            # At least one token: some tokenizers turn an empty caption into no tokens at all.
            width = min(self.max_length, -(-max(1, int(lengths[rows].max())) // 8) * 8)
            fill = ((0, step - len(rows)), (0, 0))
            batch = self.encode_tokens(np.pad(ids[rows, :width], fill),
                                       np.pad(mask[rows, :width], fill, constant_values=True))
            embeddings[rows, :width] = np.asarray(batch)[: len(rows)]
        embeddings[~mask] = 0.0
        return embeddings, mask


def warn_truncated(encoder, texts: Sequence[str], what: str = "captions") -> None:
    """Warns with the count of `texts` longer than the encoder's max_length: their last tokens are cut off."""
    counts = encoder.token_counts(texts)
    over = counts > encoder.max_length
    if over.any():
        logging.warning("%d of %d %s have more than config.text_encoder.max_length=%d tokens (the longest %d): they "
                        "are truncated, only their first %d tokens reach the model", over.sum(), len(texts), what,
                        encoder.max_length, counts.max(), encoder.max_length)


class NoText:
    """The 'no text' control: every caption becomes the same single zero token.

    One visible token rather than none keeps attention over the text well defined for any
    denoiser; it carries no information about the caption.
    """

    name = NO_TEXT
    hidden_size = 1

    def __init__(self, max_length: int):
        self.max_length = max_length

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """One token per text: nothing is truncated."""
        return np.ones(len(texts), np.int64)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        del batch_size
        mask = np.zeros((len(texts), self.max_length), bool)
        mask[:, 0] = True
        return np.zeros((len(texts), self.max_length, self.hidden_size), np.float32), mask

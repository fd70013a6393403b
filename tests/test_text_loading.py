"""Text encoder loading across families: the controls (random init, no text), sharding over a
mesh, logical axis names, and the errors a user can cause."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers

from configs import base
from conftest import env_with_devices
from t2ijax.errors import ConfigError
from t2ijax.models.text import load_text_encoder, load_text_model, text_encoder_from_config
from t2ijax.models.text.loading import _abstract_params, read_model_config
from text_parity import VOCAB_SIZE, padded_ids, saved_tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One model class a family; BERT's vocabulary is odd so that the mesh cannot split it.
MODELS = {
    "bert": (transformers.BertModel, dict(vocab_size=VOCAB_SIZE + 1)),
    "t5": (transformers.T5EncoderModel, {}),
    "t5gemma": (transformers.T5GemmaEncoderModel, dict(encoder_only=True)),
    "qwen3": (transformers.Qwen3Model, {}),
    "clip": (transformers.CLIPTextModel, {}),
}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return {family: saved_tiny(tmp_path_factory, family, model_class, **overrides)[0]
            for family, (model_class, overrides) in MODELS.items()}


def _one_line(error: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("family", list(MODELS))
def test_every_parameter_has_logical_axis_names(tiny_dirs, family):
    family_entry, config = read_model_config(tiny_dirs[family])
    boxed = _abstract_params(family_entry.module(config))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    allowed = {"vocab", "embed", "mlp", "heads", "kv", "layers", None}
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned)
        assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= allowed and any(leaf.names)
    stacked = [leaf for leaf in leaves if leaf.names[0] == "layers"]
    assert stacked and all(leaf.value.shape[0] == 3 for leaf in stacked)


def test_random_init_is_the_same_architecture_frozen_and_needs_no_weights(tiny_dirs, tmp_path):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dirs["qwen3"] / name, tmp_path / name)
    pretrained = load_text_encoder(tiny_dirs["qwen3"], max_length=8)
    random = load_text_encoder(tmp_path, max_length=8, init="random")
    again = load_text_encoder(tmp_path, max_length=8, init="random")
    shapes = lambda encoder: jax.tree.map(np.shape, encoder.params)  # noqa: E731
    assert shapes(random) == shapes(pretrained)
    ids, mask = padded_ids([8, 3], 8)
    out = np.asarray(random.encode_tokens(ids, mask))
    np.testing.assert_array_equal(out, np.asarray(again.encode_tokens(ids, mask)))
    assert np.isfinite(out).all() and np.abs(out - np.asarray(pretrained.encode_tokens(ids, mask))).max() > 0.1


def test_bfloat16_checkpoint_reads_as_float32(tiny_dirs, tmp_path):
    transformers.Qwen3Model.from_pretrained(tiny_dirs["qwen3"]).to(torch.bfloat16).save_pretrained(tmp_path)
    _, from_bfloat16 = load_text_model(tmp_path)
    _, from_float32 = load_text_model(tiny_dirs["qwen3"])
    for got, full in zip(jax.tree.leaves(from_bfloat16), jax.tree.leaves(from_float32), strict=True):
        assert got.dtype == jnp.float32
        np.testing.assert_array_equal(got, np.asarray(full).astype(jnp.bfloat16).astype(np.float32))


def test_no_text_gives_one_zero_token_per_caption():
    encoder = load_text_encoder("none", max_length=8)
    embeddings, mask = encoder.encode(["a red circle", ""])
    assert embeddings.shape == (2, 8, 1) and not embeddings.any()
    assert mask.dtype == bool and mask.sum(1).tolist() == [1, 1] and mask[:, 0].all()


def test_config_loads_the_path_labelled_by_the_name(tiny_dirs):
    text = ml_collections.ConfigDict(base.get_config().text_encoder)
    text.update(name="tiny-t5", path=str(tiny_dirs["t5"]), max_length=8, dtype="bfloat16", layer=1, clean="basic")
    encoder = text_encoder_from_config(text)
    assert encoder.module.dtype == jnp.bfloat16 and encoder.module.depth == 1 and encoder.name == "tiny-t5"
    assert encoder.clean(" a &amp; b ") == "a & b"
    text.update(name=str(tiny_dirs["t5"]), path="")  # without a path, the name is what is loaded
    assert text_encoder_from_config(text).name == str(tiny_dirs["t5"])


def test_unsupported_architecture_names_the_file_and_model_type(tiny_dirs, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2Model"]}))
    with pytest.raises(ConfigError) as error:
        load_text_model(tmp_path)
    assert "config.json: model_type 'gpt2'" in _one_line(error) and "qwen3" in str(error.value)

    config = json.loads((tiny_dirs["qwen3"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "use_sliding_window": True}))
    with pytest.raises(ConfigError, match="config.json: use_sliding_window=True is not supported") as error:
        load_text_model(tmp_path)
    _one_line(error)


def test_missing_files_are_named(tiny_dirs, tmp_path):
    with pytest.raises(ConfigError, match="has no config.json") as error:
        load_text_encoder(tmp_path)
    _one_line(error)

    shutil.copy(tiny_dirs["clip"] / "config.json", tmp_path / "config.json")
    with pytest.raises(ConfigError, match="has no tokenizer files .*tokenizer.json") as error:
        load_text_encoder(tmp_path)
    _one_line(error)

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dirs["clip"] / name, tmp_path / name)
    with pytest.raises(ConfigError, match=r"has no \*\.safetensors weights") as error:
        load_text_encoder(tmp_path)
    _one_line(error)

    index = {"weight_map": {"embeddings.token_embedding.weight": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="model-00001-of-00002.safetensors is missing") as error:
        load_text_encoder(tmp_path)
    _one_line(error)


SHARDED = textwrap.dedent("""
    import json, sys
    import jax, ml_collections, numpy as np
    from configs import base
    from t2ijax import sharding
    from t2ijax.models.text import TextEncoder, load_text_model

    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=4, tensor=2)))
    rules = sharding.logical_rules(base.get_config().sharding_rules)
    ids = np.random.default_rng(0).integers(2, 100, size=(4, 12)).astype(np.int32)
    mask = np.arange(12)[None] < np.array([[12], [7], [1], [12]])
    report = {}
    for family, directory, init in json.loads(sys.argv[1]):
        outputs = []
        for on_mesh in (None, mesh):
            module, params = load_text_model(directory, init=init, mesh=on_mesh, rules=rules)
            outputs.append(np.asarray(TextEncoder(module, params, None, 12, family, on_mesh).encode_tokens(ids, mask)))
        shardings = [leaf.sharding for leaf in jax.tree.leaves(params)]
        report[f"{family}/{init}"] = dict(
            error=float(np.abs(outputs[0] - outputs[1])[mask].max()),
            on_8_devices=all(s.mesh.size == 8 for s in shardings),
            split=sum(not s.is_fully_replicated for s in shardings) / len(shardings))
        if family == "bert":  # 101 vocabulary rows cannot be split 2 ways: they stay whole
            spec = params["embeddings"]["word"]["embedding"].sharding.spec
            report[f"{family}/{init}"]["vocab_kept_whole"] = spec[0] is None and spec[1] == "fsdp"
    print(json.dumps(report))
""")


def test_params_initialise_sharded_on_8_devices_and_match_1_device(tiny_dirs):
    # Random initialisation compiles slowly on a CPU: one family stands for all (it is one code path).
    runs = [(family, str(directory), "pretrained") for family, directory in tiny_dirs.items()]
    runs.append(("qwen3", str(tiny_dirs["qwen3"]), "random"))
    env = env_with_devices(8, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", SHARDED, json.dumps(runs)], cwd=REPO, env=env, check=True,
                            timeout=170, capture_output=True, text=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report) == len(runs)
    for run, outcome in report.items():
        assert outcome["error"] <= 1e-5 and outcome["on_8_devices"] and outcome["split"] > 0.5, (run, outcome)
    assert report["bert/pretrained"]["vocab_kept_whole"]

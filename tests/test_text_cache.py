"""The text cache: stores per encoder setting, only missing captions encoded, unpadded storage
equal to padded, and `t2ijax.cache_text` filling it for a whole dataset so `prepare` only reads."""
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import base
from conftest import tiny_config
from t2ijax.cache_text import summary
from t2ijax.data.prepare import cache_captions, dataset_captions
from t2ijax.data.prepare import prepare
from t2ijax.data.text_cache import TextCache, settings_key
from t2ijax.models.text import text_encoder_from_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTIONS = ["a red circle", "", "A large blue square on the left, on a white background.", "a red circle",
            "two small green triangles at the top and a purple circle at the bottom right"]


@pytest.fixture
def settings():
    text = ml_collections.ConfigDict(base.get_config().text_encoder)
    text.update(max_length=16, layer=1)
    return text


@pytest.fixture
def encoded(monkeypatch):
    """The texts each TextCache sent to its encoder, call by call."""
    calls = []
    encode = TextCache._encode

    def counted(self, texts):
        calls.append(list(texts))
        return encode(self, texts)

    monkeypatch.setattr(TextCache, "_encode", counted)
    return calls


def test_unpadded_store_pads_back_to_exactly_the_padded_arrays(tmp_path, settings):
    padded = TextCache(str(tmp_path / "padded"), settings)
    padded_embeddings, padded_mask = padded.lookup(CAPTIONS)
    unpadded = TextCache(str(tmp_path / "unpadded"), ml_collections.ConfigDict({**settings, "cache_unpadded": True}))
    unpadded.lookup(CAPTIONS)
    reread = TextCache(str(tmp_path / "unpadded"), settings)  # a fresh process, reading the unpadded part
    embeddings, mask = reread.lookup(CAPTIONS)
    np.testing.assert_array_equal(embeddings, padded_embeddings)
    np.testing.assert_array_equal(mask, padded_mask)
    assert embeddings.dtype == np.float16 and mask.dtype == bool and embeddings.shape == (5, 16, 384)
    want, want_mask = text_encoder_from_config(settings).encode(CAPTIONS)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(embeddings, want.astype(np.float16))
    assert reread.padded_bytes == padded.padded_bytes == padded.stored_bytes == 4 * 16 * (384 * 2 + 1)
    tokens = int(mask.sum() - mask[0].sum())  # "a red circle" is stored once
    assert reread.stored_bytes == tokens * 384 * 2 + 4 * 4


def test_only_missing_captions_are_encoded_and_every_setting_but_storage_keys_the_store(tmp_path, settings,
                                                                                       encoded):
    first = TextCache(str(tmp_path), settings)
    a, _ = first.lookup(CAPTIONS[:2])
    again = TextCache(str(tmp_path), ml_collections.ConfigDict({**settings, "cache_unpadded": True}))
    b, b_mask = again.lookup(["a blue square", *CAPTIONS[:2], "a blue square"])
    assert encoded == [["", "a red circle"], ["a blue square"]]
    np.testing.assert_array_equal(b[1:3], a)
    np.testing.assert_array_equal(b[0], b[3])
    assert len(os.listdir(first.directory)) == 2 and b_mask[0].any()

    keys = {settings_key(settings)}
    for field, value in [("name", "none"), ("path", "/models/t5"), ("max_length", 9), ("layer", -1),
                         ("init", "random"), ("dtype", "bfloat16"), ("clean", "basic")]:
        keys.add(settings_key(ml_collections.ConfigDict({**settings, field: value})))
    assert len(keys) == 8
    assert settings_key(ml_collections.ConfigDict({**settings, "cache_unpadded": True})) == settings_key(settings)


def test_cache_text_fills_every_caption_and_prepare_only_reads(data_dir, encoded):
    config = tiny_config(data_dir)
    config.data.data_dir = os.path.join(data_dir, "..", "cache_text_data")
    config.text_encoder.cache_unpadded = True
    config.data.captions = (("caption_long", 0.5), ("caption_short", 0.5))  # every field named is encoded
    report = cache_captions(config)
    texts = set(dataset_captions(config))
    assert {"", config.sampler.negative_prompt, *config.sample.prompts} <= texts and len(texts) > 300
    assert report["shape"] == (len(texts), 16, 384) and report["encoded"] == len(texts)
    assert 0 < report["stored_bytes"] < report["padded_bytes"]
    line = summary(report)
    assert "\n" not in line and f"{len(texts)} captions" in line and "[" in line and " s" in line

    encoded.clear()
    for field in ("caption_long", "caption_short"):
        config.data.captions = ((field, 1.0),)
        data = prepare(config)
        assert data.train_text.shape[1:] == (16, 384) and data.prompts["text"].shape[0] == 2
    assert encoded == [] and cache_captions(config)["encoded"] == 0


def test_cache_text_rejects_bad_settings_in_one_line():
    result = subprocess.run([sys.executable, "-m", "t2ijax.cache_text", "--config=configs/shapes_tiny.py",
                             "--config.text_encoder.clean=aggressive"], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: config.text_encoder.clean='aggressive' is not one of: basic, deepfloyd, none"]

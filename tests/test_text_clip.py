"""The Flax CLIP text encoder against transformers' CLIPTextModel: hidden states and pooled output."""
import numpy as np
import pytest
import transformers

from t2ijax.errors import ConfigError
from t2ijax.models.text import load_text_encoder
from text_parity import (VOCAB_SIZE, assert_bfloat16_close, assert_encodes_captions, assert_matches_reference,
                         padded_ids, reference_outputs, save_tiny, saved_tiny, tiny_config)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return saved_tiny(tmp_path_factory, "clip", transformers.CLIPTextModel)


def test_matches_transformers_last_and_penultimate_layer(clip):
    assert_matches_reference(*clip, layers=(-1, -2, 1))
    assert_bfloat16_close(*clip)


@pytest.mark.parametrize("eos_token_id", [VOCAB_SIZE - 1, 2])  # 2: configs older than the end-token fix
def test_pooled_output_matches_transformers(tmp_path, eos_token_id):
    model = save_tiny(tmp_path, transformers.CLIPTextModel, tiny_config("clip", eos_token_id=eos_token_id))
    ids, mask = padded_ids([20, 9, 3], 20)
    ids[np.arange(3), mask.sum(1) - 1] = VOCAB_SIZE - 1  # each text ends with the end token
    expected = reference_outputs(model, ids, mask).pooler_output.numpy()
    got = np.asarray(load_text_encoder(tmp_path, max_length=20).pool_tokens(ids, mask))
    assert np.abs(got - expected).max() <= 1e-5


def test_whole_clip_model_checkpoint_loads_its_text_tower(tmp_path):
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=8,
                  patch_size=4)
    config = transformers.CLIPConfig(text_config=tiny_config("clip").to_dict(), vision_config=vision)
    model = save_tiny(tmp_path, transformers.CLIPModel, config)
    assert_matches_reference(tmp_path, model.text_model, layers=(-1,))


def test_max_length_beyond_the_position_table_names_the_field(clip):
    with pytest.raises(ConfigError, match=r"text_encoder.max_length=25 exceeds the 24 positions .*max_position"):
        load_text_encoder(clip[0], max_length=25)


def test_pooled_output_needs_every_layer(clip):
    ids, mask = padded_ids([4], 4)
    with pytest.raises(ConfigError, match="layer=-1"):
        load_text_encoder(clip[0], max_length=4, layer=1).pool_tokens(ids, mask)


def test_captions_encode(clip):
    assert_encodes_captions(clip[0])

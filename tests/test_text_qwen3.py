"""The Flax Qwen3 encoder against transformers' Qwen3Model (grouped-query, causal, RoPE)."""
import pytest
import transformers

from text_parity import (assert_bfloat16_close, assert_encodes_captions, assert_matches_reference, save_tiny,
                         saved_tiny, tiny_config)


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return saved_tiny(tmp_path_factory, "qwen3", transformers.Qwen3Model)


def test_matches_transformers_last_and_intermediate_layer(qwen3):
    assert_matches_reference(*qwen3, layers=(-1, 2, -3))
    assert_bfloat16_close(*qwen3)


def test_causal_lm_checkpoint_loads_its_decoder_stack(tmp_path):
    model = save_tiny(tmp_path, transformers.Qwen3ForCausalLM, tiny_config("qwen3", attention_bias=True), seed=1)
    assert_matches_reference(tmp_path, model.model, layers=(-1,))


def test_captions_encode_and_an_empty_caption_has_no_tokens(qwen3):
    assert_encodes_captions(qwen3[0])

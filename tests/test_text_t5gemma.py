"""The Flax T5Gemma encoder against transformers' T5Gemma encoder (local and full attention layers).

The tiny config's window (3 tokens each side) is shorter than the test sequences, so it matters.
"""
import pytest
import torch
import transformers

from text_parity import (assert_bfloat16_close, assert_encodes_captions, assert_matches_reference, save_tiny,
                         tiny_config)


def _with_random_norms(cls):
    """`cls` whose norm weights are random: they start at zero (scale 1 + w), which would hide a
    missing offset."""
    def build(config):
        model = cls(config)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "norm" in name:
                    parameter.normal_(0.0, 0.5)
        return model

    return build


@pytest.fixture(scope="module")
def encoder_decoder(tmp_path_factory):
    directory = tmp_path_factory.mktemp("t5gemma")
    model = save_tiny(directory, _with_random_norms(transformers.T5GemmaModel), tiny_config("t5gemma"))
    return directory, model.encoder


def test_encoder_of_an_encoder_decoder_matches_transformers(encoder_decoder):
    assert_matches_reference(*encoder_decoder, layers=(-1, 1, 2))
    assert_bfloat16_close(*encoder_decoder)


def test_encoder_only_checkpoint_matches_transformers(tmp_path):
    model = save_tiny(tmp_path, _with_random_norms(transformers.T5GemmaEncoderModel),
                      tiny_config("t5gemma", encoder_only=True))
    assert_matches_reference(tmp_path, model, layers=(-1,))


def test_captions_encode(encoder_decoder):
    assert_encodes_captions(encoder_decoder[0])

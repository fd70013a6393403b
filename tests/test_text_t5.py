"""The Flax T5 encoder against transformers' T5EncoderModel (v1.1 gated-GELU and v1.0 ReLU)."""
import numpy as np
import pytest
import torch
import transformers
from transformers.models.t5.modeling_t5 import T5Attention

from t2ijax.models.text.t5 import relative_position_buckets
from text_parity import (assert_bfloat16_close, assert_encodes_captions, assert_matches_reference, save_tiny,
                         saved_tiny, tiny_config)


@pytest.fixture(scope="module")
def v1_1(tmp_path_factory):
    return saved_tiny(tmp_path_factory, "t5", transformers.T5EncoderModel)


def test_v1_1_matches_transformers_last_and_intermediate_layer(v1_1):
    # Lengths up to 20 reach the log-spaced buckets (exact below 4, capped at distance 20).
    assert_matches_reference(*v1_1, layers=(-1, 1, 0))
    assert_bfloat16_close(*v1_1)


def test_v1_0_relu_matches_transformers(tmp_path):
    model = save_tiny(tmp_path, transformers.T5EncoderModel, tiny_config("t5", feed_forward_proj="relu"))
    assert_matches_reference(tmp_path, model, layers=(-1,))


def test_mt5_checkpoint_loads_as_t5(tmp_path):
    config = transformers.MT5Config(**tiny_config("t5").to_dict())
    assert_matches_reference(tmp_path, save_tiny(tmp_path, transformers.MT5EncoderModel, config), layers=(-1,))


def test_relative_position_buckets_match_transformers():
    for num_buckets, max_distance in [(32, 128), (16, 20)]:
        relative = torch.arange(300)[None, :] - torch.arange(300)[:, None]
        expected = T5Attention._relative_position_bucket(relative, True, num_buckets, max_distance).numpy()
        np.testing.assert_array_equal(relative_position_buckets(300, num_buckets, max_distance), expected)


def test_captions_encode(v1_1):
    assert_encodes_captions(v1_1[0])

"""The data suite of t2ijax.bench on the tiny config: the fields it reports and how they relate (not speeds)."""
import pytest

from conftest import tiny_config
from t2ijax import throughput


def test_data_suite_reports_loader_and_step_rates(data_dir):
    result = throughput.data_suite(tiny_config(data_dir), steps=2)
    assert set(result) == {"loader_images_per_s", "train_step_images_per_s", "headroom", "global_batch_size",
                           "train_examples"}
    assert result["loader_images_per_s"] > 0 and result["train_step_images_per_s"] > 0
    assert result["headroom"] == pytest.approx(result["loader_images_per_s"] / result["train_step_images_per_s"],
                                               rel=0.02, abs=0.06)
    assert result["global_batch_size"] == 8 and result["train_examples"] == {"32x32": 256}

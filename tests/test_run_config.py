"""Run directories written with older field names (config.text, config.data.caption_field) still load, and
the paths of a run's config mean the same files from any working directory."""
import json
import os

from configs import shapes_tiny
from t2ijax.config import validate
from t2ijax.training.restore import load_run_config, with_resolved_paths


def _old_run(directory, text: dict):
    saved = shapes_tiny.get_config().to_dict()
    del saved["text_encoder"]
    saved["text"] = text
    (directory / "config.json").write_text(json.dumps(saved))
    return str(directory)


def test_old_text_section_maps_to_text_encoder(tmp_path):
    run = _old_run(tmp_path, dict(encoder="all-MiniLM-L6-v2", max_length=16, output_layer=4, init="random",
                                  dtype="bfloat16"))
    config = load_run_config(run)
    assert "text" not in config
    assert config.text_encoder.to_dict() == dict(name="all-MiniLM-L6-v2", path="", tokenizer="", max_length=16, layer=4,
                                                 init="random", dtype="bfloat16", clean="none", cache_unpadded=False)
    validate(config, num_devices=1)


def test_old_encoder_directory_becomes_the_path_and_missing_fields_their_defaults(tmp_path):
    encoder = tmp_path / "my-t5"
    encoder.mkdir()
    config = load_run_config(_old_run(tmp_path, dict(encoder=str(encoder), max_length=8)))
    assert config.text_encoder.to_dict() == dict(name="my-t5", path=str(encoder), tokenizer="", max_length=8, layer=-1,
                                                 init="pretrained", dtype="float32", clean="none",
                                                 cache_unpadded=False)


def test_old_caption_field_maps_to_captions(tmp_path):
    saved = shapes_tiny.get_config().to_dict()
    del saved["data"]["captions"]
    saved["data"]["caption_field"] = "caption_short"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = load_run_config(str(tmp_path))
    assert "caption_field" not in config.data and [list(p) for p in config.data.captions] == [["caption_short", 1.0]]
    validate(config, num_devices=1)


def test_local_paths_resolve_and_names_urls_and_hub_ids_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vae").mkdir()
    config = shapes_tiny.get_config()
    config.data.update(data_dir="data", path="gs://bucket/photos")
    config.text_encoder.update(name="org/encoder-on-the-hub", path="~/encoders/t5")
    config.autoencoder.name = "vae"
    config.teacher.path = "facebook/dinov2-base"
    resolved = with_resolved_paths(config)
    assert (resolved.data.data_dir, resolved.data.path) == (str(tmp_path / "data"), "gs://bucket/photos")
    assert resolved.text_encoder.path == os.path.expanduser("~/encoders/t5")
    assert (resolved.text_encoder.name, resolved.teacher.path) == ("org/encoder-on-the-hub", "facebook/dinov2-base")
    assert resolved.autoencoder.name == str(tmp_path / "vae") and config.autoencoder.name == "vae"
    assert with_resolved_paths(shapes_tiny.get_config()).autoencoder.name == "identity"
    # A run saved with a relative data_dir reads it from the working directory, as it was read then.
    (tmp_path / "config.json").write_text(config.to_json())
    assert load_run_config(str(tmp_path)).data.data_dir == str(tmp_path / "data")

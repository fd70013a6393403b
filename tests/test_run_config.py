"""The paths of a run's config mean the same files from any working directory."""
import os

from configs import shapes_tiny
from t2ijax.training.restore import load_run_config, with_resolved_paths


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

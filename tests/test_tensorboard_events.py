"""t2ijax/metrics/tensorboard_events.py: the event files TensorBoard's own loader reads back tag for tag,
written and read without importing TensorFlow, on disk and in a bucket (the GCS emulator)."""
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

import gcs_emulator
from t2ijax import storage
from t2ijax.metrics import tensorboard_events
from t2ijax.metrics.tensorboard_events import EventWriter, read_events

IMAGES = np.random.default_rng(0).integers(0, 256, (2, 6, 10, 3), dtype=np.uint8)


def _write(directory) -> EventWriter:
    writer = EventWriter(str(directory))
    writer.write_scalars(3, {"loss": 0.25, "eval/colour": 1.0})
    writer.write_images(3, {"samples": IMAGES})
    writer.write_scalars(6, {"loss": 0.125})
    writer.close()
    return writer


def _values(events) -> list[tuple[int, str, str, object]]:
    """(step, tag, plugin, value) of every summary value: a float, or the decoded images."""
    out = []
    for event in events:
        for value in event.summary.value:
            array = tensor_util.make_ndarray(value.tensor)
            if value.metadata.plugin_data.plugin_name == "images":
                width, height, *pngs = array
                decoded = np.stack([np.asarray(Image.open(io.BytesIO(png))) for png in pngs])
                assert (int(width), int(height)) == decoded.shape[2:0:-1]
                out.append((event.step, value.tag, "images", decoded))
            else:
                out.append((event.step, value.tag, value.metadata.plugin_data.plugin_name, float(array)))
    return out


def test_tensorboards_loader_reads_what_is_written(tmp_path):
    writer = _write(tmp_path)
    assert writer.path.name.startswith("events.out.tfevents.")
    found = _values(EventFileLoader(str(writer.path)).Load())
    assert [v[:3] for v in found] == [(3, "loss", "scalars"), (3, "eval/colour", "scalars"), (3, "samples", "images"),
                                      (6, "loss", "scalars")]
    assert [v[3] for v in found if v[2] == "scalars"] == [0.25, 1.0, 0.125]
    np.testing.assert_array_equal(found[2][3], IMAGES)
    ours = list(read_events(writer.path))
    assert ours[0].file_version == "brain.Event:2" and [e.wall_time for e in ours] == [
        e.wall_time for e in EventFileLoader(str(writer.path)).Load()]
    for mine, theirs in zip(_values(ours), found):
        assert mine[:3] == theirs[:3] and np.array_equal(mine[3], theirs[3])


def test_a_record_cut_short_ends_the_events_and_a_damaged_one_is_named(tmp_path):
    writer = _write(tmp_path)
    data = writer.path.read_bytes()
    whole = list(read_events(writer.path))
    writer.path.write_bytes(data[:-5])  # the writer killed inside its last record
    assert list(read_events(writer.path)) == whole[:-1]
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 1
    writer.path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"events\.out\.tfevents\.\S+: the record at byte \d+ fails its checksum"):
        list(read_events(writer.path))


def test_images_other_than_uint8_nhwc_are_refused(tmp_path):
    writer = EventWriter(str(tmp_path))
    with pytest.raises(ValueError, match=r"samples: images must be uint8 \[N, H, W, C\], got float32 \(6, 10, 3\)"):
        writer.write_images(1, {"samples": IMAGES[0].astype(np.float32)})


def test_writing_and_reading_never_imports_tensorflow(tmp_path):
    script = f"""
import sys
import numpy as np
from t2ijax.ablation.results import _training_log
from t2ijax import storage
from t2ijax.metrics.tensorboard_events import EventWriter
writer = EventWriter({str(tmp_path)!r})
writer.write_scalars(2, {{"loss": 0.5, "images_per_sec": 4.0}})
writer.write_images(2, {{"samples": np.zeros((1, 4, 4, 3), np.uint8)}})
writer.close()
loss, rates, _ = _training_log(storage.Path({str(tmp_path)!r}))
assert loss == {{2: 0.5}} and rates == [4.0], (loss, rates)
print("tensorflow" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"]


def test_in_a_bucket_the_events_are_uploaded_at_flush_and_every_few_minutes(gcs, monkeypatch):
    bucket = gcs_emulator.create_bucket(gcs, "t2ijax-events")
    writer = EventWriter(f"{bucket}/tensorboard")
    writer.write_scalars(1, {"loss": 1.0})
    assert not writer.path.exists()  # kept in memory until an upload
    writer.flush()
    assert [v[:2] for v in _values(read_events(writer.path))] == [(1, "loss")]
    monkeypatch.setattr(tensorboard_events, "UPLOAD_EVERY_S", 0.0)
    writer.write_scalars(2, {"loss": 0.5})  # past the interval: uploaded with the write
    assert [v[:2] for v in _values(read_events(storage.Path(str(writer.path))))] == [(1, "loss"), (2, "loss")]

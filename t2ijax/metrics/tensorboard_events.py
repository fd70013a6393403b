"""TensorBoard event files written without TensorFlow: scalars and images as TensorFlow 2's summaries write
them (tag = name, a float32 scalar or [width, height, PNG...] strings tensor, the plugin's metadata), framed
as TFRecords. Importing TensorFlow took 5 s of CPU in every training process; this needs only protobuf.

A local file is appended to at every write. An object in a bucket cannot be appended to, so there the
events are kept in memory and the whole object is rewritten, through t2ijax/storage.py like every other file
a run writes, at flush() and at the first write 2 minutes after the last upload (as TensorFlow's writer
flushes, and its GCS file re-uploads the whole file).
"""
import io
import os
import socket
import struct
import time

import google_crc32c
import jax
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

from t2ijax import storage

UPLOAD_EVERY_S = 120


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def record(data: bytes) -> bytes:
    """One TFRecord: the length, its checksum, the data, its checksum."""
    length = struct.pack("<Q", len(data))
    return length + _masked_crc(length) + data + _masked_crc(data)


def read_events(path: storage.Path):
    """The events of one file, in order; a record cut short at the end (a writer killed mid-write) ends them."""
    data, offset = path.read_bytes(), 0
    while offset + 12 <= len(data):
        header, length_crc = data[offset:offset + 8], data[offset + 8:offset + 12]
        (length,) = struct.unpack("<Q", header)
        end = offset + 12 + length + 4
        if end > len(data):
            return
        body = data[offset + 12:end - 4]
        if _masked_crc(header) != length_crc or _masked_crc(body) != data[end - 4:end]:
            raise ValueError(f"{path}: the record at byte {offset} fails its checksum")
        yield event_pb2.Event.FromString(body)
        offset = end


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(out, format="png")
    return out.getvalue()


class EventWriter:
    """One event file under `directory`, named as TensorBoard expects (`events.out.tfevents.*`)."""

    def __init__(self, directory: str):
        self._directory = storage.resolve(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self.path = self._directory / f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._in_bucket = storage.is_url(os.fspath(self.path))
        self._written = bytearray()  # in a bucket: the whole file, rewritten at each flush
        self._unflushed, self._uploaded_at = False, time.monotonic()
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        data = record(event.SerializeToString())
        if self._in_bucket:
            self._written += data
            self._unflushed = True
            if time.monotonic() - self._uploaded_at > UPLOAD_EVERY_S:
                self.flush()
        else:
            with open(self.path, "ab") as f:
                f.write(data)

    def _summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        metadata = scalar_metadata.create_summary_metadata(display_name="", description="")
        self._summary(step, [summary_pb2.Summary.Value(tag=tag, metadata=metadata,
                                                       tensor=tensor_util.make_tensor_proto(np.float32(value)))
                             for tag, value in scalars.items()])

    def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """`images`: name -> uint8 [N, H, W, C] with C of 1, 3 or 4."""
        values = []
        for tag, batch in images.items():
            batch = np.asarray(batch)
            if batch.dtype != np.uint8 or batch.ndim != 4:
                raise ValueError(f"{tag}: images must be uint8 [N, H, W, C], got {batch.dtype} {batch.shape}")
            strings = [str(batch.shape[2]).encode(), str(batch.shape[1]).encode(), *map(_png, batch)]
            values.append(summary_pb2.Summary.Value(
                tag=tag, metadata=image_metadata.create_summary_metadata(display_name="", description=""),
                tensor=tensor_util.make_tensor_proto(np.array(strings, dtype=object))))
        self._summary(step, values)

    def flush(self) -> None:
        if self._unflushed:
            self.path.write_bytes(bytes(self._written))
            self._unflushed, self._uploaded_at = False, time.monotonic()

    def close(self) -> None:
        self.flush()


class NoWriter:
    """What the processes other than 0 write: nothing."""

    def write_scalars(self, step, scalars) -> None:
        pass

    def write_images(self, step, images) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def tensorboard_writer(directory: str) -> EventWriter | NoWriter:
    """The writer of TensorBoard scalars and images under `directory`: process 0's; the others write nothing."""
    return EventWriter(directory) if jax.process_index() == 0 else NoWriter()

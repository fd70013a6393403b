"""Training records: one example per ArrayRecord record, in shards written whole or not at all.

A record is a dict of numpy arrays (any dtype, bfloat16 included), byte strings, lists of byte strings
and JSON values (strings, numbers). It is stored as a little-endian uint32 header length, a JSON header
and the arrays' and byte strings' bytes, so decoding copies nothing but what the header names.
Shards are written uncompressed with group size 1 (random access to any record) under a temporary name,
then renamed: a shard that exists is complete.
"""
import json
import os
import struct

import ml_dtypes
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from t2ijax.errors import ConfigError, StorageError

_HEADER = struct.Struct("<I")
SHARD_SUFFIX = ".array_record"
# Random access to any record; uncompressed: bf16 embeddings and PNGs shrink ~25 % under zstd, whose decoding
# halved the loader's records/s (docs/benchmarks.md, "Data at scale").
WRITER_OPTIONS = "group_size:1,uncompressed"


class RecordError(ConfigError):
    """A missing shard or a record that cannot be decoded: names the shard and the index in it."""


def dtype_named(name: str) -> np.dtype:
    return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)


def encode(example: dict) -> bytes:
    """`example` as one record's bytes."""
    header, buffers, offset = {}, [], 0
    for name, value in example.items():
        if isinstance(value, np.ndarray):
            data = np.ascontiguousarray(value).tobytes()
            header[name] = {"array": value.dtype.name, "shape": list(value.shape), "at": offset, "size": len(data)}
        elif isinstance(value, bytes):
            data = value
            header[name] = {"bytes": [offset, len(data)]}
        elif isinstance(value, list) and value and all(isinstance(v, bytes) for v in value):
            spans, data = [], b"".join(value)
            for v in value:
                spans.append([offset + sum(s[1] for s in spans), len(v)])
            header[name] = {"bytes_list": spans}
        else:
            header[name] = {"json": value}
            continue
        buffers.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER.pack(len(text)) + text + b"".join(buffers)


def decode(record: bytes) -> dict:
    """The example `encode` made `record` from; arrays are read-only views of `record`."""
    (length,) = _HEADER.unpack_from(record)
    header = json.loads(record[_HEADER.size:_HEADER.size + length])
    body = memoryview(record)[_HEADER.size + length:]
    out = {}
    for name, spec in header.items():
        if "array" in spec:
            dtype = dtype_named(spec["array"])
            out[name] = np.frombuffer(body, dtype, count=spec["size"] // dtype.itemsize,
                                      offset=spec["at"]).reshape(spec["shape"])
        elif "bytes" in spec:
            start, size = spec["bytes"]
            out[name] = bytes(body[start:start + size])
        elif "bytes_list" in spec:
            out[name] = [bytes(body[start:start + size]) for start, size in spec["bytes_list"]]
        else:
            out[name] = spec["json"]
    return out


def shard_name(index: int) -> str:
    return f"shard-{index:05d}{SHARD_SUFFIX}"


def write_shard(path: str, examples: list[dict]) -> None:
    """Writes `examples` as the shard `path`, atomically: a rerun finds it whole or absent."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        writer = ArrayRecordWriter(tmp, WRITER_OPTIONS)
        try:
            for example in examples:
                writer.write(encode(example))
        finally:
            writer.close()
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # the writer reports a full disk as RuntimeError
        if os.path.exists(tmp):
            os.remove(tmp)
        raise StorageError(f"record shard {path} could not be written ({' '.join(str(error).split())[:160]}); the "
                           "shards already written are kept: free space and rerun the same command") from None


class RecordSet:
    """The records of one folder's shards, as one sequence: `read(indices)` decodes them in one batched read.

    `shards` lists (file name, record count) in order, as the manifest does; every shard must exist. With
    `skip_bad`, a record that cannot be decoded is replaced by the next readable one and counted in `skipped`.
    """

    def __init__(self, directory: str, shards: list[tuple[str, int]], skip_bad: bool = False):
        import grain  # imported here: the record format itself needs no loader

        self.directory, self.skip_bad, self.skipped = directory, skip_bad, 0
        paths = [os.path.join(directory, name) for name, _ in shards]
        for path in paths:
            if not os.path.exists(path):
                raise RecordError(f"record shard {path} is missing; rerun `python -m t2ijax.preprocess` with the same "
                                  "config and --out to write it (finished shards are kept)")
        self._names = [name for name, _ in shards]
        self._starts = np.cumsum([0] + [count for _, count in shards])
        try:
            self._source = grain.sources.ArrayRecordDataSource(paths)
        except Exception:  # noqa: BLE001 - find the shard that does not open and name it
            for path in paths:
                try:
                    grain.sources.ArrayRecordDataSource([path])
                except Exception as error:  # noqa: BLE001
                    raise RecordError(f"record shard {path} cannot be read ({' '.join(str(error).split())[:120]}); "
                                      "delete it and rerun `python -m t2ijax.preprocess` with the same config and "
                                      "--out to write it again") from None
            raise
        if len(self._source) != self._starts[-1]:
            raise RecordError(f"the shards under {directory} hold {len(self._source)} records, the manifest "
                              f"{self._starts[-1]}; rerun preprocessing into a new --out directory")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def where(self, index: int) -> str:
        """"<shard path> record <i>" of global record `index`."""
        shard = int(np.searchsorted(self._starts, index, side="right") - 1)
        return f"{os.path.join(self.directory, self._names[shard])} record {index - self._starts[shard]}"

    def read(self, indices) -> list[dict]:
        return self.read_counted(indices)[0]

    def read_counted(self, indices) -> tuple[list[dict], int]:
        """The records at `indices`, and how many bad ones the next readable record stood in for (skip_bad)."""
        indices = [int(i) for i in indices]
        try:
            raw = self._source.__getitems__(indices)
        except Exception:  # noqa: BLE001 - one broken record fails the batch: read one at a time to find it
            raw = [None] * len(indices)
        out = [self._example(index, record) for index, record in zip(indices, raw)]
        skipped = sum(count for _, count in out)
        self.skipped += skipped
        return [example for example, _ in out], skipped

    def _example(self, index: int, record: bytes | None) -> tuple[dict, int]:
        first, skipped = index, 0
        while True:
            try:
                return decode(self._source[index] if record is None else record), skipped
            except Exception as error:  # noqa: BLE001 - any failure to read or parse is a bad record
                if not self.skip_bad:
                    raise RecordError(f"corrupt record: {self.where(index)} ({type(error).__name__}); write the "
                                      "records anew with t2ijax.preprocess into another --out, or set "
                                      "data.bad_records=skip") from None
                skipped += 1
                index, record = (index + 1) % len(self), None
                if index == first:
                    raise RecordError(f"no record under {self.directory} can be read") from None

"""User datasets (t2ijax/data/user_data.py) as TensorFlow Datasets, built in resumable, shardable chunks.

The listing is cut into chunks of config.data.build_chunk entries, each chunk one TFDS builder config
that holds every entry of the chunk, kept or skipped (so the build report is read back with the data).
TFDS writes a chunk aside and renames it when done, so a rerun after a kill builds only the missing
chunks, and process p of P builds the chunks c with c % P == p, then waits for the others. A chunk is
built in this process, or as a TFDS Apache Beam build by the runner config.data.beam_runner names
(`Engine`); both write the same records. Chunks are ArrayRecord files: example i of the listing is
read by index (`read_range`) without reading the others.
"""
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from t2ijax import sharding
from t2ijax.data.shapes_tfds import download_and_prepare
from t2ijax.data.user_data import (Entry, Example, Raw, Sizing, Skip, Source, Summary, check_split, example,
                                   listing, report, summarize)

FILE_FORMAT = "array_record"  # read by index: each process of the next stage reads only its share
INDEX = "t2ijax_index.json"  # a built chunk's summaries (user_data.Summary rows), beside its records
PIECE = 32  # Beam: consecutive entries of one file read and converted by one worker (a parquet row group once)


class UserData(tfds.core.GeneratorBasedBuilder):
    """One chunk of a user dataset: every entry of the chunk, kept (image, captions) or skipped (reason)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, records=None, **kwargs):
        self._records = records  # (index, record) pairs or a Beam PTransform making them; None when only reading
        super().__init__(file_format=FILE_FORMAT, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"key": text, "image": tfds.features.Image(shape=(None, None, 3)),
                                                 "captions": text, "converted": text, "skipped": text}),
            disable_shuffling=True,  # the listing's order is the dataset's (Beam: records sorted by index)
            description="Your image-caption data (t2ijax/data/user_data.py).")

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is local
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        return self._records


_PLACEHOLDER = np.zeros((1, 1, 3), np.uint8)  # a skipped entry's image: TFDS needs one


def _record(ex: Example) -> dict:
    return {"key": ex.key, "image": _PLACEHOLDER if ex.image is None else ex.image,
            "captions": json.dumps(ex.captions, ensure_ascii=False), "converted": ex.converted, "skipped": ex.skipped}


def _example(record: dict) -> Example:
    skipped = record["skipped"].decode()
    return Example(record["key"].decode(), None if skipped else record["image"], json.loads(record["captions"]),
                   record["converted"].decode(), skipped)


@dataclasses.dataclass(frozen=True)
class Build:
    """Where a dataset's chunks live: its name depends on the source's files, the sizing and the chunking."""
    source: Source
    data_dir: str
    sizing: Sizing
    build_chunk: int

    @functools.cached_property
    def name(self) -> str:
        # the format too: a TFRecord build of the same data, from before, is not taken for this one
        identity = repr((self.source.fingerprint(), self.sizing, self.build_chunk, FILE_FORMAT))
        return f"{self.source.name}_{hashlib.sha256(identity.encode()).hexdigest()[:16]}"

    def chunks(self, entries: list[Entry]) -> list[list[Entry]]:
        return [entries[i:i + self.build_chunk] for i in range(0, len(entries), self.build_chunk)]

    def builder(self, chunk: int, count: int, records=None) -> UserData:
        config = tfds.core.BuilderConfig(name=f"{self.name}_chunk{chunk:05d}of{count:05d}")
        return UserData(config=config, data_dir=self.data_dir, records=records)

    @property
    def report_path(self) -> Path:
        return Path(self.data_dir) / "user_data" / f"{self.name}.report.json"


@dataclasses.dataclass(frozen=True)
class Engine:
    """What builds a chunk: this process (runner "") or an Apache Beam runner, e.g. "DirectRunner" (`workers`
    local processes) or "DataflowRunner" (with its `options`: project, region, temp_location ...)."""
    runner: str = ""
    workers: int = 2
    options: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, data: ml_collections.ConfigDict) -> "Engine":
        return cls(data.beam_runner, data.beam_workers, tuple(data.beam_options))

    def download_config(self) -> dict:
        """download_and_prepare's DownloadConfig fields for this engine."""
        if not self.runner:
            return {}
        from apache_beam.options.pipeline_options import PipelineOptions  # Beam builds only

        local = {"direct_num_workers": self.workers, "direct_running_mode": "multi_processing"}
        return {"beam_runner": self.runner,
                "beam_options": PipelineOptions(list(self.options), **(local if self.runner == "DirectRunner" else {}))}

    def records(self, build: Build, entries: list[Entry]):
        """The chunk's (index, record) pairs: a generator here, a PTransform making them on Beam's workers."""
        if not self.runner:
            return _records((0, entries), build.source, build.sizing)
        import apache_beam as beam  # Beam builds only

        return beam.Create(list(_pieces(entries))) | beam.FlatMap(_records, build.source, build.sizing)


def _pieces(entries: list[Entry]) -> Iterator[tuple[int, list[Entry]]]:
    """(index of its first entry, entries): runs of at most PIECE consecutive entries of one file (where[0])."""
    start = 0
    for _, run in itertools.groupby(entries, key=lambda entry: entry.where[0]):
        run = list(run)
        for i in range(0, len(run), PIECE):
            yield start + i, run[i:i + PIECE]
        start += len(run)


def _convert(key: str, raw: Raw | None, sizing: Sizing) -> Example:
    """The entry's example, or its skip reason (`raw` None: a duplicate key, never read)."""
    if raw is None:
        return Example(key, None, {}, skipped="duplicate_key")
    try:
        return example(key, raw, sizing)
    except Skip as skip:
        return Example(key, None, {}, skipped=skip.reason)


def _records(piece: tuple[int, list[Entry]], source: Source, sizing: Sizing) -> Iterator[tuple[int, dict]]:
    """(first + i, record) of each of a piece's consecutive entries (first: the index of its first), their files
    read in one pass."""
    first, entries = piece
    raws = source.read([e for e in entries if not e.duplicate])
    for i, entry in enumerate(entries):
        yield first + i, _record(_convert(entry.key, None if entry.duplicate else next(raws), sizing))


def build_chunks(build: Build, entries: list[Entry], process_index: int = 0, process_count: int = 1,
                 engine: Engine = Engine()) -> None:
    """Builds the missing chunks c with c % process_count == process_index."""
    chunks = build.chunks(entries)
    for c in range(process_index, len(chunks), process_count):
        builder = build.builder(c, len(chunks))
        if builder.is_prepared():
            continue
        for stale in Path(builder.data_path).parent.glob("incomplete.*"):  # a killed build's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        download_and_prepare(build.builder(c, len(chunks), engine.records(build, chunks[c])),
                             **engine.download_config())
        index_chunks(build, entries, [c])


def chunk_lengths(build: Build, entries: list[Entry]) -> list[int]:
    """Examples (kept and skipped) in each built chunk, from its metadata: no image is read."""
    count = len(build.chunks(entries))
    return [build.builder(c, count).info.splits["train"].num_examples for c in range(count)]


def read_positions(build: Build, entries: list[Entry], positions) -> list[Example]:
    """The examples at these listing positions (kept or skipped), read by index from the chunks holding them."""
    positions = np.asarray(positions, np.int64)
    if len(positions) and not (0 <= positions.min() and positions.max() < len(entries)):
        raise ValueError(f"positions {positions.min()}..{positions.max()} of a listing of {len(entries)}")
    count, size, out = len(build.chunks(entries)), build.build_chunk, []
    for c in np.unique(positions // size):
        records = build.builder(int(c), count).as_data_source(split="train")
        out += map(_example, records.__getitems__((positions[positions // size == c] - c * size).tolist()))
    order = np.argsort(np.argsort(positions // size, kind="stable"), kind="stable")
    return [out[i] for i in order]


def read_range(build: Build, entries: list[Entry], start: int, stop: int) -> list[Example]:
    """Examples start, ..., stop - 1 of the listing (kept or skipped), read by index from the chunks holding them."""
    if not 0 <= start <= stop <= len(entries):
        raise ValueError(f"examples {start}:{stop} of a listing of {len(entries)}")
    return read_positions(build, entries, range(start, stop))


def read(build: Build, entries: list[Entry]) -> list[Example]:
    """Every entry's example (kept or skipped), chunk after chunk in listing order."""
    return read_range(build, entries, 0, len(entries))


def _index_path(build: Build, chunk: int, count: int) -> Path:
    return Path(build.builder(chunk, count).data_dir) / INDEX


def index_chunks(build: Build, entries: list[Entry], chunks) -> None:
    """Writes the summaries (user_data.Summary) of built chunks that have none: each chunk read once, by the
    process that built it, so that no process reads every image to learn the sizes and skip reasons."""
    count = len(build.chunks(entries))
    for c in chunks:
        path = _index_path(build, c, count)
        if path.exists():
            continue
        start = c * build.build_chunk
        rows = [summarize(ex).row() for ex in read_range(build, entries, start, min(start + build.build_chunk,
                                                                                    len(entries)))]
        tmp = path.with_name(f".{INDEX}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(rows, ensure_ascii=False))
        tmp.replace(path)


def summaries(build: Build, entries: list[Entry]) -> list[Summary]:
    """Every entry's summary, from the chunks' indexes."""
    count = len(build.chunks(entries))
    index_chunks(build, entries, range(count))  # a build from before the indexes
    return [Summary.from_row(row) for c in range(count) for row in json.loads(_index_path(build, c, count).read_text())]


_barriers = itertools.count()  # every process builds the same datasets in the same order


def built(source: Source, data_dir: str, sizing: Sizing, build_chunk: int, num_validation: int,
          engine: Engine = Engine()) -> tuple[Build, list[Entry], list[Summary]]:
    """Builds and indexes this process's share of the missing chunks, waits for the others, and returns the
    build, the listing's entries and their summaries; process 0 writes the build report when it is new."""
    found = listing(source)
    check_split(found, num_validation, source.name)
    build = Build(source, data_dir, sizing, build_chunk)
    build_chunks(build, found.entries, jax.process_index(), jax.process_count(), engine)
    index_chunks(build, found.entries, range(jax.process_index(), len(build.chunks(found.entries)),
                                             jax.process_count()))
    if jax.process_count() > 1:
        sharding.barrier(f"t2ijax: {build.name} built #{next(_barriers)}")
    examples = summaries(build, found.entries)
    if jax.process_index() == 0 and not build.report_path.exists():
        summary = report(examples, sizing.sizes, found.ignored)
        tmp = build.report_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        tmp.replace(build.report_path)
        whole = ", ".join(f"{name} ({why})" for name, why in summary["files_skipped"].items())
        logging.log(logging.WARNING if summary["skipped"] or summary["ignored"] else logging.INFO,
                    "built %s: kept %d of %d entries, skipped %s; ignored %s%s; report: %s", source.name,
                    summary["kept"], summary["entries"], summary["skipped"] or "none", summary["ignored"] or "none",
                    f"; files skipped whole: {whole}" if whole else "", build.report_path)
    return build, found.entries, examples


def load(source: Source, data_dir: str, sizing: Sizing, build_chunk: int, num_validation: int,
         engine: Engine = Engine()) -> list[Example]:
    """`built`, then every entry's example with its image (kept or skipped), in listing order."""
    build, entries, _ = built(source, data_dir, sizing, build_chunk, num_validation, engine)
    return read(build, entries)

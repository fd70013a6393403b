"""User datasets (t2ijax/data/user_data.py) as TensorFlow Datasets, built in resumable, shardable chunks.

The listing is cut into chunks of config.data.build_chunk entries, each chunk one TFDS builder config
that holds every entry of the chunk, kept or skipped (so the build report is read back with the data).
TFDS writes a chunk aside and renames it when done, so a rerun after a kill builds only the missing
chunks, and process p of P builds the chunks c with c % P == p, then waits for the others. Reading
concatenates the chunks in listing order.
"""
import dataclasses
import functools
import hashlib
import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from t2ijax import sharding
from t2ijax.data.shapes_tfds import download_and_prepare
from t2ijax.data.user_data import Entry, Example, Sizing, Skip, Source, check_split, example, listing, report


class UserData(tfds.core.GeneratorBasedBuilder):
    """One chunk of a user dataset: every entry of the chunk, kept (image, captions) or skipped (reason)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, examples: Iterator[Example] | None = None, **kwargs):
        self._examples = examples  # what to write; None when only reading
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"key": text, "image": tfds.features.Image(shape=(None, None, 3)),
                                                 "captions": text, "converted": text, "skipped": text}),
            disable_shuffling=True,  # the listing's order is the dataset's
            description="Your image-caption data (t2ijax/data/user_data.py).")

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is local
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        placeholder = np.zeros((1, 1, 3), np.uint8)  # a skipped entry's image: TFDS needs one
        for index, ex in enumerate(self._examples):
            yield index, {"key": ex.key, "image": placeholder if ex.image is None else ex.image,
                          "captions": json.dumps(ex.captions, ensure_ascii=False), "converted": ex.converted,
                          "skipped": ex.skipped}


@dataclasses.dataclass(frozen=True)
class Build:
    """Where a dataset's chunks live: its name depends on the source's files, the sizing and the chunking."""
    source: Source
    data_dir: str
    sizing: Sizing
    build_chunk: int

    @functools.cached_property
    def name(self) -> str:
        identity = repr((self.source.fingerprint(), self.sizing, self.build_chunk))
        return f"{self.source.name}_{hashlib.sha256(identity.encode()).hexdigest()[:16]}"

    def chunks(self, entries: list[Entry]) -> list[list[Entry]]:
        return [entries[i:i + self.build_chunk] for i in range(0, len(entries), self.build_chunk)]

    def builder(self, chunk: int, count: int, examples: Iterator[Example] | None = None) -> UserData:
        config = tfds.core.BuilderConfig(name=f"{self.name}_chunk{chunk:05d}of{count:05d}")
        return UserData(config=config, data_dir=self.data_dir, examples=examples)

    @property
    def report_path(self) -> Path:
        return Path(self.data_dir) / "user_data" / f"{self.name}.report.json"


def _chunk_examples(build: Build, entries: list[Entry]) -> Iterator[Example]:
    raws = build.source.read([e for e in entries if not e.duplicate])
    for entry in entries:
        if entry.duplicate:
            yield Example(entry.key, None, {}, skipped="duplicate_key")
            continue
        raw = next(raws)
        try:
            yield example(entry.key, raw, build.sizing)
        except Skip as skip:
            yield Example(entry.key, None, {}, skipped=skip.reason)


def build_chunks(build: Build, entries: list[Entry], process_index: int = 0, process_count: int = 1) -> None:
    """Builds the missing chunks c with c % process_count == process_index."""
    chunks = build.chunks(entries)
    for c in range(process_index, len(chunks), process_count):
        builder = build.builder(c, len(chunks), _chunk_examples(build, chunks[c]))
        if builder.is_prepared():
            continue
        for stale in Path(builder.data_path).parent.glob("incomplete.*"):  # a killed build's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        download_and_prepare(builder)


def read(build: Build, entries: list[Entry]) -> list[Example]:
    """Every entry's example (kept or skipped), chunk after chunk in listing order."""
    count, out = len(build.chunks(entries)), []
    for c in range(count):
        for ex in tfds.as_numpy(build.builder(c, count).as_dataset(split="train")):
            skipped = ex["skipped"].decode()
            out.append(Example(ex["key"].decode(), None if skipped else ex["image"], json.loads(ex["captions"]),
                               ex["converted"].decode(), skipped))
    return out


_barriers = itertools.count()  # every process builds the same datasets in the same order


def load(source: Source, data_dir: str, sizing: Sizing, build_chunk: int, num_validation: int) -> list[Example]:
    """Builds this process's share of the missing chunks, waits for the others, reads every example and
    writes the build report (process 0) when it is new."""
    found = listing(source)
    check_split(found, num_validation, source.name)
    build = Build(source, data_dir, sizing, build_chunk)
    build_chunks(build, found.entries, jax.process_index(), jax.process_count())
    if jax.process_count() > 1:
        sharding.barrier(f"t2ijax: {build.name} built #{next(_barriers)}", timeout_s=6 * 3600)
    examples = read(build, found.entries)
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
    return examples

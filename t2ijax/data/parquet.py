"""config.data.name='parquet': .parquet files of encoded images and their captions.

config.data.image_column holds the image bytes (binary, or a struct with a "bytes" field as Hugging
Face datasets write it); every other string column is a caption field (null: the row lacks it, as an
image lacks a sidecar), except config.data.key_column, which names each row (default: the file's
path and the row number). Files are read in sorted order,
rows in file order, a row group at a time.
"""
import itertools
from collections.abc import Iterator
from pathlib import Path

import ml_collections
import pyarrow as pa
import pyarrow.parquet as pq

from t2ijax.data import image_folder
from t2ijax.data.user_data import Entry, Raw, files
from t2ijax.errors import ConfigError


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _image_bytes(value) -> bytes:
    return (value.get("bytes") if isinstance(value, dict) else value) or b""


class ParquetSource:
    name = "parquet"

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.path, self.image_column, self.key_column = cfg.path, cfg.image_column, cfg.key_column

    def _files(self) -> tuple[Path, list[Path]]:
        return files(self.path, self.name, (".parquet",), "a folder of .parquet files (or a glob of them)")

    def _captions(self, file: Path) -> list[str]:
        """The caption columns of `file`; ConfigError when the image or key column is not there."""
        schema = pq.read_schema(file)
        for field, column in (("image_column", self.image_column), ("key_column", self.key_column)):
            if column and column not in schema.names:
                raise ConfigError(f"config.data.{field}='{column}' is not a column of {file} (its columns: "
                                  f"{', '.join(schema.names)}); set config.data.{field}")
        kind = schema.field(self.image_column).type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)):
            raise ConfigError(f"config.data.image_column='{self.image_column}' of {file} holds {kind}, not encoded "
                              "image bytes (binary, or a struct with a \"bytes\" field); set config.data.image_column")
        return [f.name for f in schema if _is_text(f.type) and f.name not in (self.image_column, self.key_column)]

    def entries(self) -> list[Entry]:
        root, parquets = self._files()
        out = []
        for file in parquets:
            self._captions(file)  # the columns are there
            if self.key_column:
                keys = map(str, pq.read_table(file, columns=[self.key_column]).column(0).to_pylist())
            else:
                name = file.relative_to(root).as_posix()
                keys = (f"{name}/{row}" for row in range(pq.ParquetFile(file).metadata.num_rows))
            out += [Entry(key, (str(file), row)) for row, key in enumerate(keys)]
        return out

    def read(self, entries: list[Entry]) -> Iterator[Raw]:
        for file, run in itertools.groupby(entries, key=lambda entry: entry.where[0]):
            yield from self._rows(Path(file), [entry.where[1] for entry in run])

    def _rows(self, file: Path, rows: list[int]) -> Iterator[Raw]:
        """The rows of `file` (ascending), reading only the row groups that hold them."""
        parquet, captions = pq.ParquetFile(file), self._captions(file)
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        firsts = [sum(sizes[:g]) for g in range(len(sizes))]
        groups = [g for g in range(len(sizes)) if firsts[g] <= rows[-1] and rows[0] < firsts[g] + sizes[g]]
        table = parquet.read_row_groups(groups, columns=[self.image_column, *captions]).to_pydict()
        for row in rows:
            at = row - firsts[groups[0]]
            yield Raw(_image_bytes(table[self.image_column][at]),
                      fields={c: table[c][at] for c in captions if table[c][at] is not None})

    def fingerprint(self) -> str:
        root, parquets = self._files()
        return f"{image_folder.fingerprint(str(root), parquets)}:{self.image_column}:{self.key_column}"

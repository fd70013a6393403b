"""config.data.name='parquet': .parquet files of encoded images and their captions.

config.data.image_column holds the image bytes (binary, or a struct with a "bytes" field as Hugging
Face datasets write it); every other column of text is a caption field (null: the row lacks it, as an
image lacks a sidecar), and so is every column of numbers, booleans or dates, read as their text (a class
label 3 reads "3"), except config.data.key_column, which names each row (default: the file's path and the
row number). Columns of bytes, lists or structs are counted as ignored. A file that cannot be read, or whose
image column is all null, is skipped and named in the report (t2ijax/data/user_data.py). Files are read in
sorted order, rows in file order, a row group at a time.
"""
import itertools
from collections.abc import Iterator
from pathlib import Path

import ml_collections
import pyarrow as pa
import pyarrow.parquet as pq

from t2ijax.data import image_folder
from t2ijax.data.user_data import Entry, Found, Raw, Skip, files
from t2ijax.errors import ConfigError


def _is_caption(kind: pa.DataType) -> bool:
    """Text, or a scalar read as its text: not bytes, nor lists, structs or maps."""
    kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    return not (pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                or pa.types.is_fixed_size_binary(kind))


def _text(value) -> str:
    return value if isinstance(value, str) else str(value)


def _image_bytes(value) -> bytes:
    return (value.get("bytes") if isinstance(value, dict) else value) or b""


class ParquetSource:
    name = "parquet"

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.path, self.image_column, self.key_column = cfg.path, cfg.image_column, cfg.key_column

    def _files(self) -> Found:
        found = files(self.path, self.name, (".parquet",), "a folder of .parquet files (or a glob of them)")
        for other in found.others:
            found.ignore(other, "other_file")
        return found

    def _columns(self, file: Path) -> tuple[list[str], list[str]]:
        """The caption columns of `file` and those it cannot read as captions; ConfigError when the image or
        key column is not there or the image column holds no bytes, Skip when the file cannot be read or its
        image column is all null."""
        try:
            schema = pq.read_schema(file)
        except (pa.ArrowException, OSError):
            raise Skip("file_unreadable") from None
        for field, column in (("image_column", self.image_column), ("key_column", self.key_column)):
            if column and column not in schema.names:
                raise ConfigError(f"config.data.{field}='{column}' is not a column of {file} (its columns: "
                                  f"{', '.join(schema.names)}); set config.data.{field}")
        kind = schema.field(self.image_column).type
        if pa.types.is_null(kind):
            raise Skip("image_column_null")
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)):
            raise ConfigError(f"config.data.image_column='{self.image_column}' of {file} holds {kind}, not encoded "
                              "image bytes (binary, or a struct with a \"bytes\" field); set config.data.image_column")
        others = [f for f in schema if f.name not in (self.image_column, self.key_column)]
        return [f.name for f in others if _is_caption(f.type)], [f.name for f in others if not _is_caption(f.type)]

    def _keys(self, file: Path, found: Found) -> list[str]:
        try:
            if self.key_column:
                return list(map(str, pq.read_table(file, columns=[self.key_column]).column(0).to_pylist()))
            return [f"{found.name(file)}/{row}" for row in range(pq.ParquetFile(file).metadata.num_rows)]
        except (pa.ArrowException, OSError):
            raise Skip("file_unreadable") from None

    def entries(self) -> tuple[list[Entry], dict[str, str]]:
        found, out = self._files(), []
        for file in found.files:
            try:
                unused = self._columns(file)[1]
                keys = self._keys(file, found)
            except Skip as skip:
                found.ignore(file, skip.reason)
                continue
            found.ignored.update({f"{found.name(file)}:{column}": "column_not_text" for column in unused})
            out += [Entry(key, (str(file), row)) for row, key in enumerate(keys)]
        return out, found.ignored

    def read(self, entries: list[Entry]) -> Iterator[Raw]:
        for file, run in itertools.groupby(entries, key=lambda entry: entry.where[0]):
            yield from self._rows(Path(file), [entry.where[1] for entry in run])

    def _rows(self, file: Path, rows: list[int]) -> Iterator[Raw]:
        """The rows of `file` (ascending), reading only the row groups that hold them."""
        parquet, captions = pq.ParquetFile(file), self._columns(file)[0]
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        firsts = [sum(sizes[:g]) for g in range(len(sizes))]
        groups = [g for g in range(len(sizes)) if firsts[g] <= rows[-1] and rows[0] < firsts[g] + sizes[g]]
        try:
            table = parquet.read_row_groups(groups, columns=[self.image_column, *captions]).to_pydict()
        except (pa.ArrowException, OSError):  # a broken page: its footer was fine when listed
            yield from (Raw(b"", error="unreadable") for _ in rows)
            return
        for row in rows:
            at = row - firsts[groups[0]]
            yield Raw(_image_bytes(table[self.image_column][at]),
                      fields={c: _text(table[c][at]) for c in captions if table[c][at] is not None})

    def fingerprint(self) -> str:
        found = self._files()
        files = image_folder.fingerprint(found.root, found.files, found.ignored)
        return f"{files}:{self.image_column}:{self.key_column}"

"""Export file formats with pinned settings: CSV, JSON lines and Parquet.

Each format writes *parts* (one file each) through the same small interface:
``add(row)`` then ``close()``, which returns the file's sha256 and size. The
settings of every format are fixed here and recorded in the manifest, so the
same rows always give the same bytes (for Parquet: with the same pyarrow
version, which the manifest records).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any, Protocol

from temporal import columnar
from temporal.encoding import ColumnType, csv_row
from temporal.errors import TemporalError
from temporal.manifest import file_sha256

BATCH_ROWS = 10_000

SETTINGS: dict[str, dict[str, Any]] = {
    "csv": {"encoding": "utf-8", "delimiter": ",", "quote": '"', "quoting": "all non-NULL",
            "null": "empty unquoted field", "line_terminator": "\\n", "header": True,
            "values": "canonical text"},
    "jsonl": {"encoding": "utf-8", "object_per_line": True, "separators": [",", ":"],
              "ensure_ascii": False, "keys": "column order",
              "values": "numbers and booleans as JSON (NaN, Infinity, -Infinity bare), "
                        "arrays as arrays of canonical texts, everything else canonical text"},
    "parquet": {"compression": "zstd", "compression_level": 3, "use_dictionary": False,
                "write_statistics": True, "version": "2.6", "data_page_version": "1.0",
                "row_group_rows": BATCH_ROWS, "types": "from the SQL types (schema: arrow)"},
}


class WriterError(TemporalError):
    """Rows that the chosen format cannot hold as asked."""


@dataclass
class Batch:
    """Consecutive rows of one table as their canonical CSV lines (the digest's rows)."""

    lines: list[bytes]
    width: int

    def __len__(self) -> int:
        return len(self.lines)

    @cached_property
    def joined(self) -> bytes:
        """The lines as one string of bytes (a CSV part's content; the digest's rows)."""
        return b"".join(self.lines)

    @cached_property
    def texts(self) -> list[Any]:
        """One Arrow string array of canonical texts per column."""
        return columnar.text_columns(self.joined, self.width)

    def cut(self, start: int, stop: int) -> Batch:
        return Batch(self.lines[start:stop], self.width)


class Part(Protocol):
    def add(self, batch: Batch) -> None: ...

    def close(self) -> tuple[str, int]: ...


class _TextPart:
    """CSV or JSON lines, hashed as written (a batch at a time)."""

    def __init__(self, path: Path, encode: Callable[[Batch], bytes], header: bytes = b"") -> None:
        self.handle: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.encode = encode
        self._write(header)

    def add(self, batch: Batch) -> None:
        self._write(self.encode(batch))

    def _write(self, data: bytes) -> None:
        self.handle.write(data)
        self.sha256.update(data)
        self.size += len(data)

    def close(self) -> tuple[str, int]:
        self.handle.close()
        return self.sha256.hexdigest(), self.size


class _ParquetPart:
    """One Parquet file; its schema comes from the SQL types, never from the rows."""

    def __init__(self, path: Path, columns: Sequence[str], types: Sequence[ColumnType]) -> None:
        import pyarrow.parquet as pq

        self.columns, self.types = columns, types
        self.schema = columnar.arrow_schema(columns, types)
        options = SETTINGS["parquet"]
        self.path = path
        self.writer = pq.ParquetWriter(
            path, self.schema, compression=options["compression"],
            compression_level=options["compression_level"],
            use_dictionary=options["use_dictionary"],
            write_statistics=options["write_statistics"], version=options["version"],
            data_page_version=options["data_page_version"])

    def add(self, batch: Batch) -> None:
        import pyarrow as pa

        arrays = [columnar.to_arrow(t, texts, name) for name, t, texts
                  in zip(self.columns, self.types, batch.texts, strict=True)]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema),
                                row_group_size=BATCH_ROWS)

    def close(self) -> tuple[str, int]:
        self.writer.close()
        return file_sha256(self.path)


def part_maker(fmt: str, columns: list[str], types: list[ColumnType]
               ) -> Callable[[Path], Part]:
    """A function that opens the next part file of one table in ``fmt``."""
    if fmt == "csv":
        header = csv_row(list(columns))
        return lambda path: _TextPart(path, lambda batch: batch.joined, header)
    columnar.arrow_schema(columns, types)  # pyarrow is there, or a clear error now
    if fmt == "jsonl":
        def encode(batch: Batch) -> bytes:
            return columnar.json_lines(columns, types, batch.texts)

        return lambda path: _TextPart(path, encode)
    return lambda path: _ParquetPart(path, columns, types)

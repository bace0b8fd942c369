"""Export file formats with pinned settings: CSV, JSON lines and Parquet.

Each format writes *parts* (one file each) through the same small interface:
``add(row)`` then ``close()``, which returns the file's sha256 and size. The
settings of every format are fixed here and recorded in the manifest, so the
same rows always give the same bytes (for Parquet: with the same pyarrow
version, which the manifest records).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import cached_property
from pathlib import Path
from typing import IO, Any, Protocol

from temporal.errors import TemporalError
from temporal.manifest import canonical, csv_row, file_sha256

BATCH_ROWS = 10_000

SETTINGS: dict[str, dict[str, Any]] = {
    "csv": {"encoding": "utf-8", "delimiter": ",", "quote": '"', "quoting": "all non-NULL",
            "null": "empty unquoted field", "line_terminator": "\\n", "header": True},
    "jsonl": {"encoding": "utf-8", "object_per_line": True, "separators": [",", ":"],
              "ensure_ascii": False, "keys": "column order",
              "non_json_values": "canonical text"},
    "parquet": {"compression": "zstd", "compression_level": 3, "use_dictionary": False,
                "write_statistics": True, "version": "2.6", "data_page_version": "1.0",
                "row_group_rows": BATCH_ROWS,
                "types": "from the first non-NULL value of each column; text otherwise"},
}


class WriterError(TemporalError):
    """Rows that the chosen format cannot hold as asked."""


@dataclass
class Batch:
    """Consecutive rows of one table: their canonical CSV lines and, unless they came
    straight from PostgreSQL's COPY (CSV only), the decoded rows."""

    lines: list[bytes]
    rows: list[Sequence[Any]] | None = None

    def __len__(self) -> int:
        return len(self.lines)

    @cached_property
    def joined(self) -> bytes:
        """The lines as one string of bytes (a CSV part's content; the digest's rows)."""
        return b"".join(self.lines)

    def cut(self, start: int, stop: int) -> Batch:
        rows = None if self.rows is None else self.rows[start:stop]
        return Batch(self.lines[start:stop], rows)


class Part(Protocol):
    def add(self, batch: Batch) -> None: ...

    def close(self) -> tuple[str, int]: ...


def json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return canonical(value)


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


class _ParquetTable:
    """Parts of one table share one Arrow schema, taken from its first rows."""

    def __init__(self, columns: list[str]) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise WriterError("parquet exports need pyarrow: pip install 'temporal[parquet]'"
                              ) from None
        self.columns = columns
        self.schema: Any = None

    def part(self, path: Path) -> Part:
        return _ParquetPart(self, path)

    def arrow_schema(self, rows: list[Sequence[Any]]) -> Any:
        import pyarrow as pa

        if self.schema is None:
            fields = []
            for i, name in enumerate(self.columns):
                sample = next((r[i] for r in rows if r[i] is not None), None)
                fields.append(pa.field(name, _arrow_type(sample)))
            self.schema = pa.schema(fields)
        return self.schema


def _arrow_type(sample: Any) -> Any:
    import pyarrow as pa

    if isinstance(sample, bool):
        return pa.bool_()
    if isinstance(sample, int):
        return pa.int64()
    if isinstance(sample, float):
        return pa.float64()
    if isinstance(sample, datetime):
        return pa.timestamp("us", tz="UTC" if sample.tzinfo is not None else None)
    if isinstance(sample, date):
        return pa.date32()
    if isinstance(sample, time):
        return pa.time64("us")
    if isinstance(sample, (bytes, bytearray, memoryview)):
        return pa.binary()
    return pa.string()  # text, decimals, UUIDs, JSON, ... as canonical text


class _ParquetPart:
    def __init__(self, table: _ParquetTable, path: Path) -> None:
        self.table = table
        self.path = path
        self.rows: list[Sequence[Any]] = []
        self.writer: Any = None

    def add(self, batch: Batch) -> None:
        assert batch.rows is not None
        self.rows += batch.rows
        if len(self.rows) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = self.table.arrow_schema(self.rows)
        arrays = []
        for i, field in enumerate(schema):
            values = [r[i] for r in self.rows]
            if pa.types.is_string(field.type):
                values = [canonical(v) for v in values]
            try:
                arrays.append(pa.array(values, type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                raise WriterError(f"column {field.name!r} mixes value types; export it as "
                                  "csv or jsonl, or cast it in a --query") from None
        if self.writer is None:
            options = SETTINGS["parquet"]
            self.writer = pq.ParquetWriter(
                self.path, schema, compression=options["compression"],
                compression_level=options["compression_level"],
                use_dictionary=options["use_dictionary"],
                write_statistics=options["write_statistics"], version=options["version"],
                data_page_version=options["data_page_version"])
        if self.rows:
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        self.rows = []

    def close(self) -> tuple[str, int]:
        self._flush()
        self.writer.close()
        return file_sha256(self.path)


def part_maker(fmt: str, columns: list[str]) -> Callable[[Path], Part]:
    """A function that opens the next part file of one table in ``fmt``."""
    if fmt == "csv":
        header = csv_row(list(columns))
        return lambda path: _TextPart(path, lambda batch: batch.joined, header)
    if fmt == "jsonl":
        def encode(batch: Batch) -> bytes:
            assert batch.rows is not None
            return "".join(
                json.dumps({c: json_value(v) for c, v in zip(columns, row, strict=True)},
                           ensure_ascii=False, separators=(",", ":")) + "\n"
                for row in batch.rows).encode()

        return lambda path: _TextPart(path, encode)
    return _ParquetTable(columns).part

"""From canonical text to Arrow columns and JSON lines, a batch at a time, vectorized.

An export encodes each value once, to its canonical text (:mod:`temporal.encoding`;
on PostgreSQL's COPY path the server does it). A batch of rows is then one
buffer of canonical CSV lines: the content digest's bytes and a CSV part's
content. JSON lines and Parquet are made from that same buffer, not from the
Python values again: pyarrow parses it into one string array per column, and
Arrow compute turns those into each column's JSON values (joined into lines
in C++) or its Arrow type (``decimal128``, ``timestamp[us, UTC]``...). So every
format holds exactly the digested values, and no value passes through Python
twice.

The way back - a part file of any format to typed Arrow columns, and those to
the canonical rows of the content digest - is here too: ``load()`` and
``verify`` use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from temporal.encoding import (
    ARRAY,
    BYTES,
    DECIMAL,
    JSON,
    JSON_RAW,
    OTHER,
    TEXT,
    TIME,
    ColumnType,
    csv_row,
    encoder,
)
from temporal.errors import TemporalError


class ColumnarError(TemporalError):
    """Values that the column's Arrow type cannot hold (e.g. NaN in a decimal)."""


def _pa() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ColumnarError("JSON lines and Parquet exports need pyarrow: "
                            "pip install 'temporal[parquet]'") from None
    return pyarrow


def arrow_type(column: ColumnType) -> Any:
    """The Arrow type that holds ``column``'s values exactly."""
    pa = _pa()
    name = column.arrow
    if column.encoding == ARRAY:
        assert column.item is not None
        return pa.list_(pa.field("element", arrow_type(column.item)))
    if name.startswith("decimal"):
        assert column.precision is not None and column.scale is not None
        make = pa.decimal128 if name.startswith("decimal128") else pa.decimal256
        return make(column.precision, column.scale)
    return {
        "int64": pa.int64(), "bool": pa.bool_(), "double": pa.float64(), "string": pa.string(),
        "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"), "timestamp[us]": pa.timestamp("us"),
        "date32[day]": pa.date32(), "time64[us]": pa.time64("us"), "binary": pa.binary(),
    }[name]


def arrow_schema(names: Sequence[str], types: Sequence[ColumnType]) -> Any:
    """Arrow fields from the SQL types (never from the data), each carrying its SQL type."""
    pa = _pa()
    return pa.schema([
        pa.field(name, arrow_type(t), metadata={"temporal.sql_type": t.sql,
                                                "temporal.encoding": t.encoding})
        for name, t in zip(names, types, strict=True)])


def text_columns(lines: bytes, width: int) -> list[Any]:
    """A buffer of canonical CSV lines as ``width`` string arrays (NULL: an empty field)."""
    pa = _pa()
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(width)]
    table = pacsv.read_csv(
        pa.py_buffer(lines),
        read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 22,
                                         use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True,
            quoted_strings_can_be_null=False, null_values=[""]))
    return [table.column(i).combine_chunks() for i in range(width)]


def to_arrow(column: ColumnType, texts: Any, name: str = "") -> Any:
    """Canonical texts (a string array) as values of ``column``'s Arrow type."""
    pa = _pa()
    import pyarrow.compute as pc

    target = arrow_type(column)
    try:
        if pa.types.is_string(target):
            return texts
        if column.encoding == TIME:
            moments = pc.binary_join_element_wise("1970-01-01T", texts, "")
            return pc.cast(pc.cast(moments, pa.timestamp("us")), target)
        if column.encoding == BYTES:
            return pa.array([None if t is None else bytes.fromhex(t)
                             for t in texts.to_pylist()], type=target)
        if column.encoding == ARRAY:
            assert column.item is not None
            lists = pa.array([None if t is None else json.loads(t) for t in texts.to_pylist()],
                             type=pa.list_(pa.string()))
            values = to_arrow(column.item, lists.flatten(), name)
            return pa.ListArray.from_arrays(lists.offsets, values, type=target,
                                            mask=lists.is_null())
        return pc.cast(texts, target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as error:
        hint = " (a NaN or infinite decimal)" if column.encoding == DECIMAL else ""
        raise ColumnarError(f"column {name!r} ({column.sql}) holds a value that Arrow "
                            f"{column.arrow} cannot hold{hint}: {error}") from None


def _json_strings(texts: Any) -> Any:
    """Each text as a JSON string literal, escaped exactly as ``json.dumps`` does."""
    pa = _pa()
    import pyarrow.compute as pc

    if pc.any(pc.match_substring_regex(texts, "[\\x00-\\x1f]")).as_py():
        return pa.array([None if t is None else json.dumps(t, ensure_ascii=False)
                         for t in texts.to_pylist()], type=pa.string())
    escaped = pc.replace_substring(pc.replace_substring(texts, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', escaped, '"', "")


#: Encodings whose canonical text may need JSON escaping (the others are digits,
#: hex, ISO 8601 and the like).
_ESCAPED = frozenset({TEXT, JSON, OTHER})


def json_lines(names: Sequence[str], types: Sequence[ColumnType], texts: Sequence[Any]
               ) -> bytes:
    """One JSON object per row, keys in column order, compact (``json.dumps`` spelling)."""
    import pyarrow.compute as pc

    parts: list[Any] = []
    for i, (name, column, values) in enumerate(zip(names, types, texts, strict=True)):
        key = ("{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":"
        if column.encoding in JSON_RAW:
            encoded = values
        elif column.encoding in _ESCAPED:
            encoded = _json_strings(values)
        else:  # canonical text without quotes, backslashes or control characters
            encoded = pc.binary_join_element_wise('"', values, '"', "")
        parts += [key, pc.fill_null(encoded, "null")]
    joined = pc.binary_join_element_wise(*parts, "}\n", "")
    return _buffer_bytes(joined)


def _buffer_bytes(strings: Any) -> bytes:
    """The concatenated values of a string array, straight from its data buffer."""
    if len(strings) == 0:
        return b""
    _, offsets_buffer, _ = strings.buffers()
    offsets = memoryview(offsets_buffer).cast("i")  # a StringArray's int32 offsets
    start, stop = offsets[strings.offset], offsets[strings.offset + len(strings)]
    data: bytes = strings.buffers()[2].slice(start, stop - start).to_pybytes()
    return data


# -- the way back --------------------------------------------------------------------------


def read_part(path: Path, fmt: str, names: Sequence[str], types: Sequence[ColumnType]) -> Any:
    """A part file of an export as an Arrow table with each column's exact type."""
    pa = _pa()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if fmt == "csv":
        data = path.read_bytes()
        body = data.split(b"\n", 1)[1] if b"\n" in data else b""
        columns = text_columns(body, len(names)) if body else \
            [pa.array([], type=pa.string()) for _ in names]
    else:
        columns = _jsonl_columns(path, names, types)
    arrays = [to_arrow(t, c, n) for n, t, c in zip(names, types, columns, strict=True)]
    return pa.Table.from_arrays(arrays, schema=arrow_schema(names, types))


def _jsonl_columns(path: Path, names: Sequence[str], types: Sequence[ColumnType]) -> list[Any]:
    """JSON lines as canonical text per column (raw JSON values re-spelled canonically)."""
    pa = _pa()
    columns: list[list[Any]] = [[] for _ in names]
    encoders = [encoder(t) if t.encoding in JSON_RAW else None for t in types]
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            for i, (name, encode) in enumerate(zip(names, encoders, strict=True)):
                value = row[name]
                columns[i].append(value if encode is None else encode(value))
    return [pa.array(c, type=pa.string()) for c in columns]


def digest_rows(table: Any, types: Sequence[ColumnType]) -> Iterator[bytes]:
    """The content digest's rows (canonical CSV lines) of a table read back with
    :func:`read_part`: what ``verify`` hashes to recompute an export's digest."""
    encoders = [encoder(t) for t in types]
    for batch in table.to_batches():
        columns = [[e(v) for v in c.to_pylist()]
                   for e, c in zip(encoders, batch.columns, strict=True)]
        for row in zip(*columns, strict=True):
            yield csv_row(row)


def to_pandas(table: Any, types: Sequence[ColumnType]) -> Any:
    """A pandas DataFrame of exact types: nullable integers, booleans and floats (NaN
    apart from NULL), Decimal objects, UTC timestamps, ``uuid.UUID`` objects."""
    import uuid

    import pandas as pd

    pa = _pa()
    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(),
               pa.float64(): pd.Float64Dtype()}
    frame = table.to_pandas(types_mapper=mapping.get)
    for name, column in zip(table.column_names, types, strict=True):
        if column.encoding == "uuid":
            frame[name] = [uuid.UUID(v) if isinstance(v, str) else None for v in frame[name]]
    return frame

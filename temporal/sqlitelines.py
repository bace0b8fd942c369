"""The SQLite fast path of exports: SQLite writes most of each canonical CSV line itself.

PostgreSQL has COPY (:mod:`temporal.pgcopy`); SQLite has no bulk output, and
decoding every value into Python only to encode it again costs five times the
``sqlite3`` shell. So where SQLite stores a column's canonical text, or
something a string function turns into it, the query renders it: runs of such
columns come back as one ready piece of the CSV line (quoted, ``"`` doubled,
NULL an empty field, the line's newline included), as a BLOB so the driver
hands over its UTF-8 bytes without decoding them. Only the columns SQLite
cannot spell canonically come back raw: doubles, whose shortest round-trip
digits SQLite does not print, are spelled a batch at a time by ``repr`` in C
(``map``; a batch holding a NULL, an infinity or another type goes value by
value through the encoder), and JSON documents are re-serialized row by row.

The stored forms read here are the ones SQLAlchemy writes for the declared
types (``2026-01-02 03:04:05.000006`` for a timestamp, 32 hex digits for a
UUID, 0/1 for a boolean), the same values the general path would decode; the
tests check that both paths and PostgreSQL give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from temporal.encoding import (
    BOOLEAN,
    BYTES,
    DATE,
    FLOAT,
    INTEGER,
    JSON,
    TEXT,
    TIME,
    TIMESTAMP,
    TIMESTAMP_UTC,
    UUID,
    ColumnType,
    Encoder,
    encoder,
)


def _field_sql(x: str, column: ColumnType) -> str | None:
    """SQLite SQL giving stored value ``x`` as its quoted canonical CSV field (an empty
    field for NULL), or None for a type whose canonical text SQLite cannot give."""
    kind = column.encoding
    if kind == INTEGER:
        # Most values are integers, which need no quote doubling (the costly part).
        return (f"CASE typeof({x}) WHEN 'integer' THEN '\"' || {x} || '\"' WHEN 'null' "
                f"THEN '' ELSE {_quoted(x)} END")
    if kind == BOOLEAN:
        return f"CASE {x} WHEN 1 THEN '\"true\"' WHEN 0 THEN '\"false\"' ELSE '' END"
    if kind == BYTES:
        # (hex(NULL) is '', not NULL)
        return f"CASE WHEN {x} IS NULL THEN '' ELSE '\"' || lower(hex({x})) || '\"' END"
    if kind in (TEXT, DATE, TIME):
        return _quoted(x)
    if kind == TIMESTAMP_UTC:
        return _quoted(f"replace({x}, ' ', 'T') || 'Z'")
    if kind == TIMESTAMP:
        return _quoted(f"replace({x}, ' ', 'T')")
    if kind == UUID:
        h = f"lower({x})"
        return _quoted(f"substr({h}, 1, 8) || '-' || substr({h}, 9, 4) || '-' || "
                       f"substr({h}, 13, 4) || '-' || substr({h}, 17, 4) || '-' || "
                       f"substr({h}, 21)")
    return None


def _quoted(text: str) -> str:
    return f"ifnull('\"' || replace({text}, '\"', '\"\"') || '\"', '')"


@dataclass
class Plan:
    """What the query selects and what Python adds between the pieces of each line."""

    select: list[str]  # pieces of the line and raw values, in line order
    floats: list[tuple[int, Encoder]] = field(default_factory=list)  # raw doubles
    documents: list[tuple[int, Encoder]] = field(default_factory=list)  # raw JSON


def plan(names: list[str], types: list[ColumnType], quote: Callable[[str], str]) -> Plan | None:
    """The select list of the line's pieces and raw values; None if a column needs the
    general path."""
    out = Plan([])
    run: list[str] = []  # SQL pieces of the line not yet closed into one select item

    def close_run() -> None:
        # As a BLOB: the driver hands back the UTF-8 bytes, decoded and encoded never.
        out.select.append(f"CAST({' || '.join(run) if run else chr(39) * 2} AS BLOB)")
        run.clear()

    for i, (name, column) in enumerate(zip(names, types, strict=True)):
        x = f"v.{quote(name)}"
        if i:
            run.append("','")
        if column.encoding == FLOAT:  # spelled in Python: SQLite cannot print repr
            close_run()
            out.floats.append((len(out.select), encoder(column)))
            out.select.append(x)
            continue
        if column.encoding == JSON:  # re-serialized in Python
            close_run()
            out.documents.append((len(out.select), encoder(column)))
            out.select.append(x)
            continue
        sql = _field_sql(x, column)
        if sql is None:
            return None
        run.append(sql)
    run.append("'\n'")  # the line's end: each line comes back whole
    close_run()
    return out


def lines(batches: Iterator[list[Any]], planned: Plan) -> Iterator[list[bytes]]:
    """Batches of rows (pieces and raw values) as batches of canonical CSV lines.

    Without JSON documents, each batch is put together a column at a time, by
    loops that run in C (``map`` over built-ins): no Python code runs per row.
    """
    if planned.documents:
        yield from _documents(batches, planned)
        return
    floats = planned.floats
    if not floats:  # one piece per row: the whole line
        for rows in batches:
            yield list(map(itemgetter(0), rows))
        return
    width = len(planned.select)
    for rows in batches:
        columns: list[Any] = [map(itemgetter(i), rows) for i in range(width)]
        for i, encode in floats:
            columns[i] = _doubles(list(columns[i]), encode)
        yield list(map(b"".join, zip(*columns, strict=True)))


def _doubles(values: list[Any], encode: Encoder) -> list[bytes]:
    """A batch of one double column's values as quoted CSV fields."""
    if set(map(type, values)) == {float} and math.inf not in values \
            and -math.inf not in values:  # (SQLite stores no NaN)
        return list(map(b'"%r"'.__mod__, values))  # repr, in C
    return [_field(encode(v)) for v in values]  # NULL, infinities, another type


def _field(text: str | None) -> bytes:
    return b"" if text is None else ('"' + text.replace('"', '""') + '"').encode()


def _documents(batches: Iterator[list[Any]], planned: Plan) -> Iterator[list[bytes]]:
    """Lines with JSON documents: each row's values encoded one by one."""
    floats = planned.floats
    for rows in batches:
        out: list[bytes] = []
        append = out.append
        for row in rows:
            parts = list(row)
            for i, encode in (*floats, *planned.documents):
                parts[i] = _field(encode(parts[i]))
            append(b"".join(parts))
        yield out

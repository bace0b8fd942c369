"""The SQLite fast path of exports: SQLite writes most of each canonical CSV line itself.

PostgreSQL has COPY (:mod:`temporal.pgcopy`); SQLite has no bulk output, and
decoding every value into Python only to encode it again costs five times the
``sqlite3`` shell. So where SQLite stores a column's canonical text, or
something a string function turns into it, the query renders it: runs of such
columns come back as one ready piece of the CSV line (quoted, ``"`` doubled,
NULL an empty field), and only the columns SQLite cannot spell canonically
(doubles, whose shortest round-trip digits SQLite does not print; JSON
documents, re-serialized) are encoded in Python between the pieces.

The stored forms read here are the ones SQLAlchemy writes for the declared
types (``2026-01-02 03:04:05.000006`` for a timestamp, 32 hex digits for a
UUID, 0/1 for a boolean), the same values the general path would decode; the
tests check that both paths and PostgreSQL give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


_IN_PYTHON = (FLOAT, JSON)  # raw stored values that Python encodes


def plan(names: list[str], types: list[ColumnType], quote: Callable[[str], str]
         ) -> tuple[list[str], list[tuple[int, Callable[[Any], str | None]]]] | None:
    """The select list (pieces of the line and raw values) and, for each raw value,
    its position and encoder; None if a column needs the general path."""
    select: list[str] = []
    in_python: list[tuple[int, Callable[[Any], str | None]]] = []
    run: list[str] = []

    def close_run(trailing_comma: bool) -> None:
        if run:
            select.append(" || ',' || ".join(run) + (" || ','" if trailing_comma else ""))
            run.clear()

    for i, (name, column) in enumerate(zip(names, types, strict=True)):
        x = f"v.{quote(name)}"
        if column.encoding in _IN_PYTHON:
            close_run(trailing_comma=True)
            in_python.append((len(select), encoder(column)))
            select.append(x)
            if i + 1 < len(names):
                run.append("''")  # the comma after this column starts the next piece
            continue
        sql = _field_sql(x, column)
        if sql is None:
            return None
        run.append(sql)
    close_run(trailing_comma=False)
    return select, in_python


def lines(batches: Iterator[list[Any]], in_python: list[tuple[int, Callable[[Any], str | None]]]
          ) -> Iterator[list[bytes]]:
    """Batches of rows (pieces and raw values) as batches of canonical CSV lines."""
    for rows in batches:
        out: list[bytes] = []
        append = out.append
        if not in_python:
            for row in rows:
                append(("".join(row) + "\n").encode())
        else:
            for row in rows:
                parts = list(row)
                for i, encode in in_python:
                    text = encode(parts[i])
                    parts[i] = "" if text is None else '"' + text.replace('"', '""') + '"'
                append(("".join(parts) + "\n").encode())
        yield out

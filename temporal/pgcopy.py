"""The PostgreSQL fast path of CSV exports: ``COPY ... TO STDOUT`` of canonical text.

A CSV export's data lines are exactly the rows of the content digest (every
non-NULL value quoted, NULL an empty field), so when the server can render
each value's canonical text itself, ``COPY (SELECT ...) TO STDOUT WITH (FORMAT
csv, FORCE_QUOTE *, NULL '')`` produces the file's bytes and the digest's
bytes at once, and no value is ever decoded in Python.

Each column type has an SQL expression that yields byte for byte what
:func:`temporal.manifest.canonical` gives for the value psycopg would return.
Tables with any other type (numeric, real, json, bytea, intervals, arrays...)
take the general path; so does every other format.

Doubles are the subtle case: PostgreSQL prints the shortest round-trip digits
(``extra_float_digits`` > 0) but spells them unlike Python's ``repr``
(``100`` for ``100.0``, ``1e+15`` for ``1000000000000000.0``), and for integral
values of 2^53 and more it prints every digit where ``repr`` finds a shorter
string. The expression below normalizes all three; the tests compare it with
``repr`` over half a million values, random bit patterns included.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, exc

from temporal._backend import valid_at_text
from temporal.encoding import (
    BOOLEAN,
    BYTES,
    DATE,
    DECIMAL,
    FLOAT,
    INTEGER,
    INTERVAL,
    TEXT,
    TIME,
    TIMESTAMP,
    TIMESTAMP_UTC,
    UUID,
    ColumnType,
)


def canonical_sql(name: str, column: ColumnType) -> str | None:
    """SQL giving the canonical text of the column ``name`` (quoted), or None for an
    encoding that only Python renders (JSON documents, arrays, other types)."""
    kind = column.encoding
    if kind == FLOAT:
        # real too: psycopg reads a real as its shortest text, parsed as a double
        real = column.sql.upper() in ("REAL", "FLOAT4")
        return double_sql(f"({name})::text::float8" if real else name)
    if kind == BOOLEAN:
        return f"CASE WHEN {name} THEN 'true' WHEN NOT {name} THEN 'false' END"
    if kind == TIMESTAMP_UTC:
        return f"to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    if kind == TIMESTAMP:
        return f"to_char({name}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    if kind == TIME:
        return f"to_char(date '2000-01-01' + {name}, 'HH24:MI:SS.US')"
    if kind == BYTES:
        return f"encode({name}, 'hex')"
    if kind in (INTEGER, TEXT, UUID, DATE, DECIMAL, INTERVAL):
        # COPY prints these as their canonical text (numeric in plain digits; with
        # the pinned DateStyle and IntervalStyle, dates and intervals in ISO 8601).
        return name
    return None


def double_sql(x: str) -> str:
    """SQL: Python's ``repr`` of the double ``x`` (with ``NaN``/``Infinity`` spelled out)."""
    text = f"({x})::text"
    digits = f"replace(split_part(ltrim({text}, '-'), 'e', 1), '.', '')"
    sign = f"CASE WHEN {x} < 0 THEN '-' ELSE '' END"
    # From 2^53 up: the shortest correctly rounded decimal that reads back as x (what
    # repr picks). PostgreSQL prints integral values below 1e22 in full, and from 1e23
    # on some values with one digit too many (9.999999999999999e+22 for 1e23).
    shortest = (f"(SELECT r FROM (SELECT ({text})::numeric AS n, "
                f"split_part({text}, 'e', 2)::int AS p) AS base "
                f"CROSS JOIN generate_series(1, 17) AS k "
                f"CROSS JOIN LATERAL (SELECT round(base.n, k - 1 - base.p) AS r) AS rounded "
                # (a CASE: rounding the largest doubles up can leave the double range)
                f"WHERE CASE WHEN abs(r) < 1.7976931348623158e308 THEN r::float8 = {x} "
                f"ELSE false END ORDER BY k LIMIT 1)")
    whole = f"ltrim(({shortest})::text, '-')"  # an integer: no decimal point
    kept = f"rtrim({whole}, '0')"
    power = f"(length({whole}) - 1)"
    large = (f"CASE WHEN {power} = 15 THEN ({shortest})::text || '.0' ELSE "
             f"{sign} || left({kept}, 1) || CASE WHEN length({kept}) > 1 THEN "
             f"'.' || substr({kept}, 2) ELSE '' END || 'e+' || {power}::text END")
    # Cheap float comparisons pick the branch; the common case is one ::text.
    return (f"CASE WHEN {x} IS NULL THEN NULL "
            f"WHEN {x} IN ('NaN', 'Infinity', '-Infinity') THEN {text} "
            f"WHEN abs({x}) < 1e15 THEN CASE WHEN {x} = trunc({x}) THEN {text} || '.0' "
            f"ELSE {text} END "
            f"WHEN abs({x}) >= 9007199254740992 THEN {large} "
            f"ELSE {sign} || CASE WHEN length({digits}) <= 16 "  # 1e15 <= |x| < 2^53
            f"THEN rpad({digits}, 16, '0') || '.0' "
            f"ELSE left({digits}, 16) || '.' || substr({digits}, 17) END END")


def copy_query(conn: Connection, table: str, data: list[Column[Any]],
               types: list[ColumnType], order: list[Column[Any]], at: datetime) -> str | None:
    """The SELECT of ``data`` columns' canonical text as of ``at``, or None if a column's
    encoding has no canonical SQL. (Reading the table includes its archive: a child.)"""
    quote = conn.dialect.identifier_preparer.quote
    texts = [canonical_sql(quote(c.name), t) for c, t in zip(data, types, strict=True)]
    if any(t is None for t in texts):
        return None
    return (f"SELECT {', '.join(str(t) for t in texts)} FROM {quote(table)} "
            f"WHERE {valid_at_text('postgresql', at)} "
            # qualified: a bare name would sort by the output column, i.e. as text
            f"ORDER BY {', '.join(f'{quote(table)}.{quote(c.name)}' for c in order)}")


def query_copy(wrapped: str, types: list[ColumnType]) -> str | None:
    """The canonical text of a query's columns ``c1``, ``c2``... (``wrapped`` names its
    output so), sorted by every column's value; None if a column has no canonical SQL."""
    texts = [canonical_sql(f"q.c{i}", t) for i, t in enumerate(types, start=1)]
    if any(t is None for t in texts):
        return None
    order = ", ".join(f"q.c{i}" for i in range(1, len(types) + 1))
    return f"SELECT {', '.join(str(t) for t in texts)} FROM ({wrapped}) AS q ORDER BY {order}"


def copy_batches(conn: Connection, query: str, size: int) -> Iterator[list[bytes]]:
    """Stream ``query``'s rows as canonical CSV lines, ``size`` rows per list, in this
    transaction."""
    raw: Any = conn.connection.driver_connection
    sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, FORCE_QUOTE *, NULL '')"
    driver_error = conn.dialect.loaded_dbapi.Error
    try:
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            lines: list[bytes] = []
            append = lines.append
            for data in copy:  # PostgreSQL sends one row per CopyData message
                append(bytes(data))
                if len(lines) == size:
                    yield lines
                    lines = []
                    append = lines.append
            if lines:
                yield lines
    except driver_error as error:  # e.g. a statement_timeout: reported as any query's are
        raise exc.DBAPIError.instance(sql, None, error, driver_error) from error

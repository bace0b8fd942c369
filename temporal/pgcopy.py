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

from sqlalchemy import Column, Connection
from sqlalchemy import types as sqltypes

from temporal._backend import valid_at_text


def canonical_sql(column: Column[Any], quote: Any) -> str | None:
    """SQL giving ``column``'s canonical text, or None for a type without one."""
    name = quote(column.name)
    kind = column.type
    if isinstance(kind, sqltypes.Double):  # float8; real and numeric are not handled
        return double_sql(name)
    if isinstance(kind, (sqltypes.Numeric, sqltypes.Interval, sqltypes.JSON,
                         sqltypes.LargeBinary, sqltypes.ARRAY)):
        return None
    if isinstance(kind, sqltypes.Boolean):
        return f"CASE WHEN {name} THEN 'true' WHEN NOT {name} THEN 'false' END"
    if isinstance(kind, sqltypes.DateTime):
        if kind.timezone:
            return (f"to_char({name} AT TIME ZONE 'UTC', "
                    "'FMYYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        return f"to_char({name}, 'FMYYYY-MM-DD\"T\"HH24:MI:SS.US')"
    if isinstance(kind, (sqltypes.Integer, sqltypes.String, sqltypes.Uuid, sqltypes.Date)):
        return f"{name}::text"
    return None


def double_sql(x: str) -> str:
    """SQL: Python's ``repr`` of the double ``x`` (with ``NaN``/``Infinity`` spelled out)."""
    text = f"({x})::text"
    digits = f"replace(split_part(ltrim({text}, '-'), 'e', 1), '.', '')"
    sign = f"CASE WHEN {x} < 0 THEN '-' ELSE '' END"
    # Integral values from 2^53 to 1e22: the shortest correctly rounded decimal that
    # reads back as x (what repr picks); PostgreSQL prints them in full.
    shortest = (f"(SELECT r FROM (SELECT ({text})::numeric AS n, "
                f"split_part({text}, 'e', 2)::int AS p) AS base "
                f"CROSS JOIN generate_series(1, 17) AS k "
                f"CROSS JOIN LATERAL (SELECT round(base.n, k - 1 - base.p) AS r) AS rounded "
                f"WHERE r::float8 = {x} ORDER BY k LIMIT 1)")
    kept = f"rtrim(ltrim(({shortest})::text, '-'), '0')"
    power = f"split_part({text}, 'e', 2)::int"
    large = (f"CASE WHEN {power} = 15 THEN ({shortest})::text || '.0' ELSE "
             f"{sign} || left({kept}, 1) || CASE WHEN length({kept}) > 1 THEN "
             f"'.' || substr({kept}, 2) ELSE '' END || 'e+' || {power}::text END")
    # Cheap float comparisons pick the branch; the common case is one ::text.
    return (f"CASE WHEN {x} IS NULL THEN NULL "
            f"WHEN {x} IN ('NaN', 'Infinity', '-Infinity') THEN {text} "
            f"WHEN abs({x}) < 1e15 THEN CASE WHEN {x} = trunc({x}) THEN {text} || '.0' "
            f"ELSE {text} END "
            f"WHEN abs({x}) >= 1e23 THEN {text} "
            f"WHEN abs({x}) >= 9007199254740992 THEN {large} "
            f"ELSE {sign} || CASE WHEN length({digits}) <= 16 "  # 1e15 <= |x| < 2^53
            f"THEN rpad({digits}, 16, '0') || '.0' "
            f"ELSE left({digits}, 16) || '.' || substr({digits}, 17) END END")


def copy_query(conn: Connection, table: str, data: list[Column[Any]], order: list[Column[Any]],
               at: datetime) -> str | None:
    """The SELECT of ``data`` columns' canonical text as of ``at``, or None if a column's
    type has no canonical SQL. (Reading the table includes its archive: a child.)"""
    quote = conn.dialect.identifier_preparer.quote
    texts = [canonical_sql(c, quote) for c in data]
    if any(t is None for t in texts):
        return None
    return (f"SELECT {', '.join(str(t) for t in texts)} FROM {quote(table)} "
            f"WHERE {valid_at_text('postgresql', at)} "
            # qualified: a bare name would sort by the output column, i.e. as text
            f"ORDER BY {', '.join(f'{quote(table)}.{quote(c.name)}' for c in order)}")


def copy_batches(conn: Connection, query: str, size: int) -> Iterator[list[bytes]]:
    """Stream ``query``'s rows as canonical CSV lines, ``size`` rows per list, in this
    transaction."""
    raw: Any = conn.connection.driver_connection
    sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, FORCE_QUOTE *, NULL '')"
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

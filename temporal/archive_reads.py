"""SQLite: as-of reads that reach into ``<table>_archive``.

On PostgreSQL the archive inherits from its table, so every read of the table
reads the archive too. SQLite has no inheritance, so an ORM read as of a
moment older than a table's archived horizon (the catalog's
``archived_through``) must read both tables, or it would miss versions that
were valid then.

Such a statement is compiled with each of those tables rendered as the union
of the hot table and its archive, under the table's own name::

    FROM (SELECT ... FROM customers UNION ALL SELECT ... FROM customers_archive)
      AS customers

so every reference to the table, the ORM's own joins and relationship loads
included, reads every version. It happens only while that one statement is
compiled (a context variable says which tables), and such statements skip the
compiled cache, so no other statement is ever rendered this way. Reads of the
present never need the archive: it holds expired versions only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, inspect, select
from sqlalchemy.ext.compiler import compiles

from temporal import catalog

_READING: ContextVar[frozenset[str]] = ContextVar("temporal_archive_reads", default=frozenset())


def archived_after(conn: Connection, at: datetime) -> frozenset[str]:
    """Tables (on SQLite) whose archive may hold versions valid at ``at``."""
    if conn.dialect.name != "sqlite" or not inspect(conn).has_table(catalog.CATALOG_TABLE):
        return frozenset()
    rows = conn.execute(select(catalog.tables.c.table_name)
                        .where(catalog.tables.c.archived_through > at))
    return frozenset(name for (name,) in rows)


@contextmanager
def reading_archives(names: frozenset[str]) -> Iterator[None]:
    """Compile statements in this block with ``names`` read through their archives."""
    token = _READING.set(names)
    try:
        yield
    finally:
        _READING.reset(token)


@compiles(Table, "sqlite")
def _with_archive(table: Table, compiler: Any, **kw: Any) -> str:
    names = _READING.get()
    if table.name not in names or table.schema is not None or not kw.get("asfrom") \
            or kw.get("iscrud"):
        return compiler.visit_table(table, **kw)  # type: ignore[no-any-return]
    quote = compiler.preparer.quote
    columns = ", ".join(quote(c.name) for c in table.c)
    union = (f"(SELECT {columns} FROM {quote(table.name)} UNION ALL "
             f"SELECT {columns} FROM {quote(catalog.archive_name(table.name))})")
    alias = kw.get("enclosing_alias")
    if alias is not None and alias.element is table:
        return union  # the alias adds its own "AS name"
    return f"{union} AS {quote(table.name)}"

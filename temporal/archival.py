"""TTL archival: move old history out of the hot table into ``<table>_archive``.

``archive(url)`` moves every version whose ``expired_at`` is older than its
table's TTL (from the catalog, or ``ttl=``) into ``<table>_archive``, a table
with the same columns, created on first use. Current rows never move.

* **Bounded batches, each one transaction** that deletes and inserts the same
  rows: on PostgreSQL a single ``WITH moved AS (DELETE ... RETURNING) INSERT``
  statement, on SQLite an ``INSERT ... SELECT`` and a ``DELETE`` of the same
  rowids under the write lock. A kill at any moment leaves every version in
  exactly one of the two tables (the archive's primary key would refuse a
  duplicate); running again finishes the job.
* **One runner at a time**: a session-level advisory lock on PostgreSQL, an
  exclusive lock on a file next to the database on SQLite. A second archiver
  gets :class:`ArchiverBusyError` at once and moves nothing.
* **Reads still see the past.** On PostgreSQL the archive *inherits* from the
  hot table, so every read of the table (``as_of``, ``history``,
  ``versions``, exports, your own SQL) includes archived versions, while a
  ``CHECK (expired_at IS NOT NULL)`` lets the planner skip the archive for
  current-row reads and writes. SQLite has no inheritance: exports,
  ``history()`` and ``versions()`` read both tables, and an ORM ``as_of(t)``
  read earlier than the archived horizon reads the union of both
  (``archive_reads.py``), so the same code reads the same past on both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    FromClause,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    bindparam,
    inspect,
    select,
    text,
    union_all,
)

from temporal import _backend, catalog, triggers
from temporal.catalog import archive_name
from temporal.clock import isoformat
from temporal.database import engine_for
from temporal.errors import TemporalError
from temporal.model import EXPIRED_AT
from temporal.names import derived, expired_index_name
from temporal.types import UTCDateTime

DEFAULT_BATCH_SIZE = 1_000
# pg_advisory_lock's one-bigint key space is separate from the two-int one the
# stamps use.
_PG_LOCK_KEY = 0x74656D706F72616C  # "temporal"


class ArchiverBusyError(TemporalError):
    """Another archiver is running on this database."""


class ArchivedError(TemporalError):
    """A read reaches before the archived horizon where it cannot see the archive."""


@dataclass
class TableResult:
    """What one run did to one table."""

    table: str
    ttl: timedelta | None
    cutoff: datetime | None = None
    moved: int = 0
    batches: int = 0
    seconds: float = 0.0
    longest_batch_seconds: float = 0.0
    last_batch_seconds: float = 0.0
    oldest_remaining: datetime | None = None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ttl"] = None if self.ttl is None else self.ttl.total_seconds()
        for name in ("cutoff", "oldest_remaining"):
            moment = getattr(self, name)
            out[name] = None if moment is None else isoformat(moment)
        return out


@dataclass
class ArchiveSummary:
    """A run: per table, versions moved (or, with ``dry_run``, that would move)."""

    tables: list[TableResult] = field(default_factory=list)
    dry_run: bool = False
    stopped: bool = False
    seconds: float = 0.0

    @property
    def moved(self) -> int:
        return sum(t.moved for t in self.tables)

    @property
    def longest_batch_seconds(self) -> float:
        return max((t.longest_batch_seconds for t in self.tables), default=0.0)

    def to_json(self) -> str:
        return json.dumps({"moved": self.moved, "dry_run": self.dry_run,
                           "stopped": self.stopped, "seconds": round(self.seconds, 3),
                           "longest_batch_seconds": round(self.longest_batch_seconds, 4),
                           "tables": [t.to_dict() for t in self.tables]},
                          separators=(",", ":"))


def archive(
    source: str | Engine,
    *,
    ttl: timedelta | None = None,
    tables: list[str] | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    should_stop: Callable[[], bool] | None = None,
    on_batch: Callable[[TableResult], None] | None = None,
) -> ArchiveSummary:
    """Move versions older than their table's TTL into ``<table>_archive``.

    ``ttl`` overrides the catalog's TTL (and archives tables that have none);
    ``tables`` limits the run to those registered tables. ``should_stop`` is
    asked between batches (a SIGTERM handler sets it); ``on_batch`` hears of
    every batch.
    """
    if ttl is not None and ttl <= timedelta(0):
        raise TemporalError(f"a TTL must be positive, not {ttl}")
    if batch_size < 1:
        raise TemporalError("the batch size must be at least 1")
    started = time.monotonic()
    summary = ArchiveSummary(dry_run=dry_run)
    with engine_for(source) as engine, _single_runner(engine):
        with engine.connect() as conn:
            _backend.dialect_name(conn)
            plans = _plan(conn, ttl, tables)
            now = _backend.database_now(conn)
        for entry, table_ttl in plans:
            result = TableResult(table=entry.table, ttl=table_ttl)
            summary.tables.append(result)
            if table_ttl is None:
                result.skipped = "no TTL (set one with `temporal ttl` or pass --ttl)"
                continue
            result.cutoff = now - table_ttl
            if summary.stopped:
                result.skipped = "stopped"
                continue
            _archive_table(engine, entry, result, dry_run, batch_size, should_stop, on_batch)
            summary.stopped = summary.stopped or result.skipped == "stopped"
    summary.seconds = time.monotonic() - started
    return summary


def _plan(conn: Connection, ttl: timedelta | None, names: list[str] | None
          ) -> list[tuple[catalog.Registration, timedelta | None]]:
    wanted = ([catalog.registration(conn, name) for name in names] if names
              else catalog.registrations(conn))
    return [(entry, ttl if ttl is not None else entry.ttl) for entry in wanted]


def _archive_table(engine: Engine, entry: catalog.Registration, result: TableResult,
                   dry_run: bool, batch_size: int, should_stop: Callable[[], bool] | None,
                   on_batch: Callable[[TableResult], None] | None) -> None:
    started = time.monotonic()
    assert result.cutoff is not None
    with engine.connect() as conn:
        if not inspect(conn).has_table(entry.table):
            result.skipped = "registered but missing from the database"
            return
        table = Table(entry.table, MetaData(), autoload_with=conn)
        hot = catalog.hot_only(conn, table.name)
        probe = "count(*)" if dry_run else "count(*) FROM (SELECT 1"
        tail = "" if dry_run else " LIMIT 1) AS due"
        due = conn.execute(text(f"SELECT {probe} FROM {hot} WHERE expired_at < :cutoff{tail}")
                           .bindparams(_cutoff(result.cutoff))).scalar_one()
    if dry_run:
        result.moved = due
    elif due:
        with engine.begin() as conn:
            archive_table(conn, table)
            catalog.mark_archived(conn, entry.table, result.cutoff)
        mover = _pg_move if engine.dialect.name == "postgresql" else _sqlite_move
        while True:
            began = time.monotonic()
            with engine.begin() as conn, triggers.maintenance(conn):
                moved = mover(conn, table, result.cutoff, batch_size)
            held = time.monotonic() - began
            result.moved += moved
            result.batches += 1
            result.last_batch_seconds = held
            result.longest_batch_seconds = max(result.longest_batch_seconds, held)
            if on_batch is not None:
                on_batch(result)
            if moved < batch_size:
                break
            if should_stop is not None and should_stop():
                result.skipped = "stopped"
                break
    with engine.connect() as conn:
        result.oldest_remaining = conn.execute(text(
            f"SELECT min(expired_at) AS oldest FROM {catalog.hot_only(conn, table.name)} "
            "WHERE expired_at IS NOT NULL").columns(oldest=UTCDateTime())).scalar_one()
    result.seconds = time.monotonic() - started


def _cutoff(moment: datetime) -> Any:
    return bindparam("cutoff", moment, type_=UTCDateTime())


def _columns(conn: Connection, table: Table) -> str:
    quote = conn.dialect.identifier_preparer.quote
    return ", ".join(quote(c.name) for c in table.c)


def _pg_move(conn: Connection, table: Table, cutoff: datetime, limit: int) -> int:
    quote = conn.dialect.identifier_preparer.quote
    columns = _columns(conn, table)
    name, archived = quote(table.name), quote(archive_name(table.name))
    statement = text(
        f"WITH moved AS (DELETE FROM ONLY {name} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM ONLY {name} WHERE expired_at < :cutoff LIMIT :limit)) "
        f"RETURNING {columns}) "
        f"INSERT INTO {archived} ({columns}) SELECT {columns} FROM moved"
    ).bindparams(_cutoff(cutoff), limit=limit)
    return conn.execute(statement).rowcount


def _sqlite_move(conn: Connection, table: Table, cutoff: datetime, limit: int) -> int:
    quote = conn.dialect.identifier_preparer.quote
    columns = _columns(conn, table)
    name, archived = quote(table.name), quote(archive_name(table.name))
    batch = f"SELECT rowid FROM {name} WHERE expired_at < :cutoff ORDER BY rowid LIMIT :limit"
    # The INSERT takes the write lock, so the DELETE sees exactly the same rows.
    moved = conn.execute(text(
        f"INSERT INTO {archived} ({columns}) SELECT {columns} FROM {name} "
        f"WHERE rowid IN ({batch})").bindparams(_cutoff(cutoff), limit=limit)).rowcount
    deleted = conn.execute(text(f"DELETE FROM {name} WHERE rowid IN ({batch})")
                           .bindparams(_cutoff(cutoff), limit=limit)).rowcount
    if moved != deleted:  # cannot happen under the write lock; never commit if it did
        raise TemporalError(f"archiving {table.name}: copied {moved} rows but deleted "
                            f"{deleted}; rolled back")
    return moved


# -- the archive table ------------------------------------------------------------------


def archive_table(conn: Connection, table: Table) -> None:
    """Create ``<table>_archive`` unless it exists: same columns, keyed and indexed
    for as-of reads. On PostgreSQL it inherits from ``table``."""
    name = archive_name(table.name)
    if inspect(conn).has_table(name):
        return
    key = [c.name for c in table.primary_key.columns]
    quote = conn.dialect.identifier_preparer.quote
    if conn.dialect.name == "postgresql":
        conn.execute(text(
            f"CREATE TABLE {quote(name)} (CONSTRAINT {quote(derived(name, '_expired'))} "
            f"CHECK (expired_at IS NOT NULL)) INHERITS ({quote(table.name)})"))
        pkey = quote(derived(name, "_pkey"))
        conn.execute(text(f"ALTER TABLE {quote(name)} ADD CONSTRAINT {pkey} "
                          f"PRIMARY KEY ({', '.join(quote(k) for k in key)})"))
        conn.execute(text(f"CREATE INDEX {quote(expired_index_name(name))} ON {quote(name)} "
                          f"(expired_at)"))
        triggers.install_archive(conn, table.name)
        return
    copy = Table(name, MetaData(),
                 *[Column(c.name, c.type, nullable=c.nullable) for c in table.c],
                 PrimaryKeyConstraint(*key, name=derived(name, "_pkey")))
    Index(expired_index_name(name), copy.c[EXPIRED_AT])
    copy.create(conn)
    triggers.install_archive(conn, table.name)


def reads_archive_apart(conn: Connection, table_name: str) -> bool:
    """Must reads of ``table_name`` add its archive themselves? (SQLite, once it has one;
    on PostgreSQL the archive is a child, read along with the table.)"""
    return conn.dialect.name == "sqlite" and catalog.has_archive(conn, table_name)


def all_versions(conn: Connection, table: Table) -> FromClause:
    """Every version of ``table``, archived ones included, as one FROM clause."""
    if not reads_archive_apart(conn, table.name):
        return table
    # The archive has the table's columns (created so; migrations keep them so).
    archived = Table(archive_name(table.name), MetaData(),
                     *[Column(c.name, c.type) for c in table.c])
    union = union_all(select(*table.c), select(*archived.c))
    return union.subquery(table.name)


# -- one runner at a time ----------------------------------------------------------------


@contextmanager
def _single_runner(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                               {"k": _PG_LOCK_KEY}).scalar_one()
            conn.commit()
            if not got:
                raise ArchiverBusyError("another archiver is running on this database; "
                                        "nothing was moved")
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield  # a private in-memory database has no other runner
        return
    import fcntl

    lock_path = Path(f"{database}.archive-lock")
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiverBusyError(f"another archiver holds {lock_path}; nothing was moved"
                                    ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

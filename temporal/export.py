"""Reproducible exports: the state of temporal tables as of a moment, on disk.

``export(source, out_dir, as_of=t, tables=[...])`` writes each table as it was
at ``t`` (its data columns, without the period columns, whose ``expired_at``
would change as history moves on) and then ``manifest.json``. Exporting the
same ``t`` again - after later writes, deletes or archival - gives the same
bytes:

* **Stable order**: rows sorted by entity key, then every other column.
* **Pinned reading**: one REPEATABLE READ snapshot with pinned session
  settings (UTC, ISO dates, float digits) on PostgreSQL; canonical value text.
* **Pinned writing**: fixed CSV/JSON layouts, recorded in the manifest.
* **No late commits**: a transaction that stamped a version at or before
  ``t`` may still be in flight when the export starts; its commit would change
  a later re-export. On PostgreSQL every transaction stamps only after it
  holds a transaction id, so the export waits (bounded) for every transaction
  in progress that started by ``t``. On SQLite it takes the write lock, which
  a writer holds from its stamp until its commit. A ``t`` in the future is
  refused: the future is not written yet.

Rows stream from the database to files, hashed while written; large tables
split into parts of at most ``rows_per_file`` rows. A ``query`` is checked and
run by :mod:`temporal.sandbox`; the files go to a partial folder that
:mod:`temporal.outdir` moves into place once the manifest is written.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    Table,
    Text,
    cast,
    exc,
    func,
    select,
    text,
)

from temporal import (
    _backend,
    authorizer,
    outdir,
    parallel,
    pgcopy,
    portable,
    querytypes,
    sandbox,
    signing,
    sqlitelines,
)
from temporal._version import VERSION
from temporal.archival import all_versions, reads_archive_apart
from temporal.catalog import archive_name, temporal_shape
from temporal.clock import aware, isoformat
from temporal.columnar import ColumnarError
from temporal.database import engine_for
from temporal.encoding import (
    ALL_OVER_ROWS,
    CSV_ROWS,
    DIGEST_ROWS,
    JSON,
    OTHER,
    THIS_ENCODING,
    ColumnType,
    all_digest,
    column_type,
    csv_row,
    encoder,
    pg_column_type,
    read_as_text,
)
from temporal.errors import ExportError, InvalidTimeError, UnsupportedError
from temporal.manifest import MANIFEST_NAME, FileEntry, Manifest
from temporal.model import CREATED_AT, EXPIRED_AT, key_columns
from temporal.query import valid_at
from temporal.types import UTCDateTime
from temporal.writers import SETTINGS, Batch, Part, WriterError, part_maker

FORMATS = ("csv", "jsonl", "parquet")
ROWS_PER_FILE = 1_000_000
FETCH_ROWS = 10_000

_STREAM = {"stream_results": True, "yield_per": FETCH_ROWS}
_IN_FLIGHT = 2  # batches read but not yet written

PG_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    # Not a result setting: compiling the canonical-text expressions costs more than
    # a one-pass export gains from JIT.
    "jit": "off",
}


#: Plain tables a query may read: names, or a function of the connection and the
#: shadowed temporal tables that gives them (a spine query may read any plain table).
Unversioned = Sequence[str] | Callable[[Connection, dict[str, Table]], Sequence[str]]


@dataclass
class Progress:
    """Reported after each batch of rows: ``on_progress(Progress)``."""

    table: str
    rows: int
    total: int | None = None  # rows the table will have, when the snapshot knows it cheaply


# -- reading -----------------------------------------------------------------------


@dataclass
class _Source:
    name: str
    columns: list[str]
    types: list[ColumnType]
    order_by: list[str]
    rows: Callable[[], Iterator[Sequence[Any]]]
    # Canonical CSV lines straight from the database (PostgreSQL's COPY, SQLite's
    # own string functions), where every column's type allows it.
    fast: Callable[[], Iterator[list[bytes]]] | None = None
    count: Callable[[], int] | None = None  # for progress: the rows to come
    # The same source read through another connection (one in the same snapshot), for
    # writing tables in parallel; None if it needs this session's temporary objects.
    reopen: Callable[[Connection], _Source] | None = None


def _temporal_table(conn: Connection, name: str, schema: str | None = None) -> Table:
    try:
        table = Table(name, MetaData(), autoload_with=conn, schema=schema)
    except exc.NoSuchTableError:
        raise ExportError(f"no table named {name!r} in this database") from None
    if temporal_shape(table) is None:
        raise ExportError(
            f"table {name!r} is not temporal (no created_at/expired_at period); "
            "its past was never recorded, so it cannot be exported as of a moment"
        )
    for period in (CREATED_AT, EXPIRED_AT):
        table.c[period].type = UTCDateTime()
    if conn.dialect.name == "sqlite":
        _use_declared_types(conn, table)
    return table


def _use_declared_types(conn: Connection, table: Table) -> None:
    """SQLite keeps no types worth the name (a UTC timestamp is DATETIME text, a UUID
    CHAR(32)): the model's declared types decide, as on PostgreSQL, and without the
    model the types the catalog recorded when the table was made."""
    declared = portable.declared_columns(table)
    recorded = portable.recorded_types(conn, table)
    for column in table.c:
        if column.name in declared:
            column.type = declared[column.name].type
        elif column.name in recorded:
            column.type = recorded[column.name]


def _table_source(conn: Connection, name: str, at: datetime) -> _Source:
    table = _temporal_table(conn, name)
    key = key_columns(table)
    data = [c for c in table.c if c.name not in (CREATED_AT, EXPIRED_AT)]
    rest = [c for c in data if c not in key]
    dialect = conn.dialect
    types = [column_type(c.type, dialect) for c in data]
    by_type = {c.name: t for c, t in zip(data, types, strict=True)}
    versions = all_versions(conn, table)  # archived versions included
    as_text = read_as_text(dialect.name)
    stmt = (select(*[cast(versions.c[c.name], Text) if t.encoding in as_text
                     else versions.c[c.name] for c, t in zip(data, types, strict=True)])
            .where(valid_at(versions, at))
            .order_by(*[cast(versions.c[c.name], Text) if by_type[c.name].encoding == JSON
                        else versions.c[c.name] for c in (*key, *rest)]))

    def rows() -> Iterator[Sequence[Any]]:
        yield from conn.execute(stmt, execution_options=_STREAM)

    def count() -> int:
        # Only asked for a progress bar on a terminal: one index-friendly pass.
        counted = select(func.count()).select_from(versions).where(valid_at(versions, at))
        return int(conn.execute(counted).scalar_one())

    fast: Callable[[], Iterator[list[bytes]]] | None = None
    if dialect.name == "postgresql":
        copy = pgcopy.copy_query(conn, name, data, types, [*key, *rest], at)
        if copy is not None:
            def fast() -> Iterator[list[bytes]]:
                return pgcopy.copy_batches(conn, copy, FETCH_ROWS)
    else:
        fast = _sqlite_lines(conn, name, data, types, [*key, *rest], at)
    return _Source(
        name=name, columns=[c.name for c in data], types=types,
        order_by=[c.name for c in key] + [c.name for c in rest], rows=rows, fast=fast,
        count=count, reopen=lambda other: _table_source(other, name, at),
    )


def _sqlite_lines(conn: Connection, name: str, data: list[Column[Any]],
                  types: list[ColumnType], order: list[Column[Any]], at: datetime
                  ) -> Callable[[], Iterator[list[bytes]]] | None:
    """SQLite: canonical lines mostly rendered by SQLite (None if a type needs Python)."""
    quote = conn.dialect.identifier_preparer.quote
    planned = sqlitelines.plan([c.name for c in data], types, quote)
    if planned is None:
        return None
    columns = ", ".join(quote(c.name) for c in data)
    valid = _backend.valid_at_text("sqlite", at)
    sources = [quote(name)] + ([quote(archive_name(name))]
                               if reads_archive_apart(conn, name) else [])
    versions = " UNION ALL ".join(f"SELECT {columns} FROM {s} WHERE {valid}" for s in sources)
    sql = (f"SELECT {', '.join(planned.select)} FROM ({versions}) AS v "
           f"ORDER BY {', '.join(f'v.{quote(c.name)}' for c in order)}")

    def fast() -> Iterator[list[bytes]]:
        # The driver's own cursor: no result processing is wanted here.
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(sql)
        return sqlitelines.lines(iter(lambda: cursor.fetchmany(FETCH_ROWS), []), planned)

    return fast


def table_history(source: str | Engine, name: str, key: Sequence[str]
                  ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """All versions of one entity of a table, by name, oldest first (for the CLI).

    ``key`` holds the key values as text, converted to each key column's type.
    """
    with engine_for(source) as engine, engine.connect() as conn:
        table = _temporal_table(conn, name)
        cols = key_columns(table)
        if len(key) != len(cols):
            raise ExportError(f"{name} has a {len(cols)}-column key "
                              f"({', '.join(c.name for c in cols)}); got {len(key)} value(s)")
        values = []
        for col, raw in zip(cols, key, strict=True):
            try:
                values.append(col.type.python_type(raw))
            except (NotImplementedError, ValueError, TypeError):
                raise ExportError(f"{raw!r} is not a valid {col.name} "
                                  f"({col.type.compile(conn.dialect)})") from None
        versions = all_versions(conn, table)
        stmt = (select(*versions.c)
                .where(*(versions.c[c.name] == v for c, v in zip(cols, values, strict=True)))
                .order_by(versions.c[CREATED_AT]))
        rows = [tuple(r) for r in conn.execute(stmt)]
    return [c.name for c in table.c], rows


def _query_source(snapshot: _Snapshot, name: str, query: str) -> _Source:
    """The sandboxed query's rows, sorted by every output column."""
    checked = snapshot.query
    assert checked is not None
    conn = snapshot.conn
    columns = checked.columns
    sql = checked.sql
    fast: Callable[[], Iterator[list[bytes]]] | None = None
    # SQLite reports no types for a query's columns: those that are table columns
    # take their table's types, and their raw values are read as the table's are.
    processors: list[Callable[[Any], Any] | None] = []
    if checked.raw_cursor:
        kinds = querytypes.result_types(sandbox.statement_text(query), columns,
                                        snapshot.shadows)
        types = [ColumnType("", OTHER) if k is None else column_type(k, conn.dialect)
                 for k in kinds]
        processors = [None if k is None or t.encoding in read_as_text("sqlite")
                      else k.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
                      for k, t in zip(kinds, types, strict=True)]
    else:  # PostgreSQL: a statement the library writes over the checked view
        view = f"pg_temp.{sandbox.VIEW}"
        types = _pg_view_types(conn, view)
        # Renamed c1, c2...: positions, whatever the columns are called.
        renamed = (f"SELECT * FROM {view} AS temporal_query"
                   f"({', '.join(f'c{i}' for i in range(1, len(columns) + 1))})")
        copy = pgcopy.query_copy(renamed, types)
        if copy is not None:
            def fast() -> Iterator[list[bytes]]:
                return pgcopy.copy_batches(conn, copy, FETCH_ROWS)
        # Else JSON (no ordering operator either) and intervals are read as text.
        textual = read_as_text("postgresql")
        as_text = [f"q.c{i}::text" if t.encoding in textual else f"q.c{i}"
                   for i, t in enumerate(types, start=1)]
        order = [f"q.c{i}::text" if t.encoding == JSON else f"q.c{i}"
                 for i, t in enumerate(types, start=1)]
        sql = f"SELECT {', '.join(as_text)} FROM ({renamed}) AS q ORDER BY {', '.join(order)}"

    def rows() -> Iterator[Sequence[Any]]:
        try:
            if checked.raw_cursor:  # SQLite: the driver runs the text as written
                cursor = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                    checked.sql)
                while batch := cursor.fetchmany(FETCH_ROWS):
                    if any(processors):
                        batch = [[v if p is None or v is None else p(v)
                                  for p, v in zip(processors, row, strict=True)]
                                 for row in batch]
                    yield from batch
            else:  # PostgreSQL: a statement the library wrote, over the checked view
                yield from conn.exec_driver_sql(sql, execution_options=_STREAM)
        except (exc.DBAPIError, sqlite3.Error) as error:
            raise sandbox.run_error(error, snapshot.guard) from None

    return _Source(name=name, columns=columns, types=types, order_by=columns, rows=rows,
                   fast=fast)


def _pg_view_types(conn: Connection, view: str) -> list[ColumnType]:
    """The encodings of a view's columns, from their types (``--query`` exports)."""
    rows = conn.execute(text(
        "SELECT t.typname, format_type(a.atttypid, a.atttypmod), a.atttypmod, e.typname, "
        "format_type(e.oid, NULL) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
        "WHERE a.attrelid = CAST(:view AS regclass) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum"), {"view": view}).all()
    types = []
    for typname, sql, typmod, item, item_sql in rows:
        precision = scale = None
        if typname == "numeric" and typmod >= 4:  # typmod: (precision << 16 | scale) + 4
            precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
        types.append(pg_column_type(typname, sql, precision, scale,
                                    None if item is None else (item, item_sql)))
    return types


@dataclass
class _Snapshot:
    conn: Connection
    dialect: str
    settings: dict[str, str] = field(default_factory=dict)
    query: sandbox.Sandboxed | None = None
    guard: Any = None  # SQLite: the authorizer, whose refusal explains a failed read
    temporary: bool = False  # PostgreSQL: temporary objects made for the read (a spine)
    shadows: dict[str, Table] = field(default_factory=dict)  # SQLite: a query's tables

    def close(self) -> None:
        try:
            if self.guard is not None:
                authorizer.release(self.conn, self.guard)
            self.conn.rollback()  # SQLite: drops the as-of views made in this transaction
            if (self.query is not None or self.temporary) and self.dialect == "postgresql":
                self.conn.exec_driver_sql("DISCARD TEMP")
                self.conn.commit()
            elif self.query is not None:
                self.conn.exec_driver_sql("PRAGMA query_only = 0")
                self.conn.commit()
        finally:
            self.conn.close()


def _open_snapshot(engine: Engine, at: datetime, wait: float, query: str | None = None,
                   unversioned: Unversioned = (),
                   prepare: Callable[[Connection], None] | None = None) -> _Snapshot:
    """A read transaction in which no version stamped at or before ``at`` can still appear.

    With ``query``, temporal tables are replaced by as-of views, the query is
    checked by the sandbox, and the transaction cannot write (``unversioned``
    may be a function of the connection and the shadowed tables that names
    them). ``prepare`` runs on the connection before the read begins, to create
    temporary objects it needs (a point-in-time join's spine).
    """
    dialect = engine.dialect.name
    if dialect == "postgresql":
        with engine.connect() as conn:
            now = _backend.database_now(conn)
            if at > now:
                raise InvalidTimeError(f"as_of {isoformat(at)} is in the future (the database "
                                       f"clock says {isoformat(now)}); the future is not "
                                       "written yet")
            _wait_for_writers(conn, at, wait)
        conn = engine.connect()
        checked = None
        if query is not None or prepare is not None:  # temp objects outlive this commit
            try:
                # The text is parsed now, when the views are made: literals such as
                # timestamptz '2026-03-01' must read under the pinned settings, not the
                # client's (PGTZ, a role's or a database's TimeZone or DateStyle).
                _pin(conn)
                if query is not None:
                    shadows = sandbox.shadow_tables(conn, at)
                    checked = sandbox.pg_prepare(conn, query, shadows,
                                                 _named(unversioned, conn, shadows))
                if prepare is not None:
                    prepare(conn)
                conn.commit()
            except BaseException:
                conn.rollback()
                conn.exec_driver_sql("DISCARD TEMP")
                conn.commit()
                conn.close()
                raise
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        conn.begin()
        conn.execute(text("SET TRANSACTION READ ONLY"))
        _pin(conn)
        return _Snapshot(conn, dialect, dict(PG_SETTINGS), query=checked,
                         temporary=prepare is not None)
    if dialect != "sqlite":
        raise UnsupportedError(f"exports support PostgreSQL and SQLite, not {dialect!r}")
    from temporal import clock

    if at > clock.now():
        raise InvalidTimeError(f"as_of {isoformat(at)} is in the future; the future is not "
                               "written yet")
    conn = engine.connect()
    conn.begin()
    try:
        _backend.hold_sqlite_write_lock(conn, wait)
    except exc.OperationalError:
        conn.close()
        raise ExportError(f"a writer held the database for more than {wait:g}s; an export "
                          "as of now must wait for it: retry, or raise the wait") from None
    snapshot = _Snapshot(conn, dialect)
    if prepare is not None:  # its temporary objects go with this transaction's rollback
        try:
            prepare(conn)
        except BaseException:
            snapshot.close()
            raise
    if query is not None:
        try:
            shadows = sandbox.shadow_tables(conn, at)
            for shadowed in shadows.values():  # read before the guard forbids the catalog
                _use_declared_types(conn, shadowed)
            snapshot.shadows = shadows
            conn.exec_driver_sql("PRAGMA query_only = 1")
            snapshot.query = sandbox.Sandboxed("", [])  # so close() resets query_only
            snapshot.query, snapshot.guard = authorizer.prepare(conn, query, shadows,
                                                                _named(unversioned, conn,
                                                                       shadows))
        except BaseException:
            snapshot.close()
            raise
    return snapshot


def _named(unversioned: Unversioned, conn: Connection, shadows: dict[str, Table]
           ) -> Sequence[str]:
    return unversioned(conn, shadows) if callable(unversioned) else unversioned


def _pin(conn: Connection) -> None:
    """PostgreSQL: the pinned session settings, for the current transaction."""
    for name, value in PG_SETTINGS.items():
        conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})


def _wait_for_writers(conn: Connection, at: datetime, wait: float) -> None:
    """PostgreSQL: wait until no transaction in flight could still commit a version <= at.

    Only this database's transactions count: one in another database on the
    same server can never write here, so it must not delay (or fail) an export.
    """
    # Every transaction holding an xid holds a lock on it (pg_locks needs no
    # special privilege). One that began after ``at`` cannot stamp <= at; one
    # whose start we cannot see (another role, a prepared transaction) might.
    in_doubt = text(
        "SELECT l.transactionid::text, l.pid, a.application_name, "
        "extract(epoch FROM clock_timestamp() - a.xact_start) "
        "FROM pg_locks l "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "LEFT JOIN pg_prepared_xacts p ON l.pid IS NULL "
        "AND p.transaction::text = l.transactionid::text "
        "WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted "
        "AND (l.pid IS NULL OR l.pid <> pg_backend_pid()) "
        "AND coalesce(a.datname, p.database) = current_database() "
        "AND (a.xact_start IS NULL OR a.xact_start <= :at)"
    )
    still = text("SELECT transactionid::text FROM pg_locks WHERE locktype = 'transactionid' "
                 "AND mode = 'ExclusiveLock' AND granted "
                 "AND transactionid::text = ANY(CAST(:xids AS text[]))")
    waiting = {row[0]: row[1:] for row in conn.execute(in_doubt, {"at": at})}
    conn.commit()
    deadline = time.monotonic() + wait
    while waiting:
        open_now = {row[0] for row in conn.execute(still, {"xids": list(waiting)})}
        conn.commit()
        waiting = {xid: info for xid, info in waiting.items() if xid in open_now}
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise ExportError(
                f"{len(waiting)} transaction(s) that began by {isoformat(at)} are still open "
                f"after {wait:g}s ({_describe_writers(waiting.values())}); one of them may yet "
                "commit a version as of that moment. Retry when they finish, or raise the wait"
            )
        time.sleep(0.05)


def _describe_writers(writers: Iterable[Sequence[Any]]) -> str:
    """``pid 123 (app), open 42s`` for each writer an export waited for."""
    described = []
    for pid, application, age in writers:
        if pid is None:
            described.append("a prepared transaction")
            continue
        app = f" ({application})" if application else ""
        opened = f", open {float(age):.0f}s" if age is not None else ""
        described.append(f"pid {pid}{app}{opened}")
    return "; ".join(described[:5]) + ("; ..." if len(described) > 5 else "")


# -- writing -----------------------------------------------------------------------


def _batches(source: _Source, plan: ExportPlan, conn: Connection
             ) -> Iterator[tuple[Batch, bytes | None]]:
    """The table's rows in batches, each with the bytes it adds to the content digest
    (None: the batch's own lines).

    On PostgreSQL, when the server can render every column's canonical text,
    the lines come straight from COPY: they are the digest's bytes and a CSV
    part's bytes, and JSON lines and Parquet are made from them.
    """
    width = len(source.columns)
    if source.fast is not None and plan.copy and plan.digest in THIS_ENCODING:
        for copied in source.fast():
            yield Batch(copied, width), None
        return
    digest_row = DIGEST_ROWS[plan.digest]
    other_digest = digest_row is not csv_row  # else the digest's rows are the CSV lines
    encoders = [encoder(t) for t in source.types]
    lines: list[bytes] = []
    digested: list[bytes] = []
    for row in source.rows():
        canon = [encode(v) for encode, v in zip(encoders, row, strict=True)]
        lines.append(csv_row(canon))
        if other_digest:
            digested.append(digest_row(canon))
        if len(lines) == FETCH_ROWS:
            yield Batch(lines, width), b"".join(digested) if other_digest else None
            lines, digested = [], []
    if lines:
        yield Batch(lines, width), b"".join(digested) if other_digest else None


def _write_table(source: _Source, out_dir: Path, plan: ExportPlan, digest: Any | None,
                 conn: Connection) -> tuple[list[FileEntry], str]:
    """Write one table's parts; return their entries and the table's content digest."""
    folder = out_dir / source.name
    folder.mkdir(parents=True, exist_ok=True)
    open_part = part_maker(plan.fmt, source.columns, source.types)
    table_digest = hashlib.sha256()
    entries: list[FileEntry] = []
    current: Part | None = None
    path = folder
    in_part = total = 0

    def start() -> Part:
        nonlocal path, in_part
        path = folder / f"part-{len(entries):05d}.{plan.fmt}"
        in_part = 0
        return open_part(path)

    def finish(part: Part) -> None:
        sha, size = part.close()
        entries.append(FileEntry(path=path.relative_to(out_dir).as_posix(), table=source.name,
                                 rows=in_part, bytes=size, sha256=sha))

    def consume(batch: Batch, digested: bytes | None) -> None:
        nonlocal current, in_part
        data = batch.joined if digested is None else digested
        table_digest.update(data)
        if digest is not None:
            digest.update(data)
        done = 0
        while done < len(batch):  # a batch may straddle parts
            if current is None:
                current = start()
            take = min(len(batch) - done, plan.rows_per_file - in_part)
            try:
                current.add(batch.cut(done, done + take) if take < len(batch) else batch)
            except ColumnarError as error:
                raise WriterError(f"{source.name}: {error}") from None
            done += take
            in_part += take
            if in_part == plan.rows_per_file:
                finish(current)
                current = None

    # Reading (the driver, in Python) and writing (hashing, Arrow, files: native code
    # that releases the GIL) overlap on two threads; a few batches in flight at most,
    # so memory stays flat.
    expected = source.count() if plan.on_progress is not None and source.count else None
    if plan.on_progress is not None:
        plan.on_progress(Progress(source.name, 0, expected))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="temporal-export") as writer:
        pending: deque[Future[None]] = deque()
        try:
            for batch, digested in _batches(source, plan, conn):
                pending.append(writer.submit(consume, batch, digested))
                while pending and (len(pending) > _IN_FLIGHT or pending[0].done()):
                    pending.popleft().result()
                total += len(batch)
                if plan.on_progress is not None:
                    plan.on_progress(Progress(source.name, total, expected))
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
    if current is None and not entries:  # an empty table still gets its (header-only) file
        current = start()
    if current is not None:
        finish(current)
    if plan.on_progress is not None:
        plan.on_progress(Progress(source.name, total, expected))
    return entries, table_digest.hexdigest()


# -- the public functions --------------------------------------------------------------


def export(
    source: str | Engine,
    out_dir: str | Path,
    *,
    as_of: datetime,
    tables: Sequence[str] | None = None,
    query: str | None = None,
    name: str | None = None,
    format: str = "csv",
    force: bool = False,
    unversioned: Sequence[str] = (),
    signing_key: bytes | None = None,
    rows_per_file: int = ROWS_PER_FILE,
    wait: float = 30.0,
    on_progress: Callable[[Progress], None] | None = None,
    spine: str | Path | None = None,
    spine_query: str | None = None,
    at: str | None = None,
    join: Mapping[str, str | Sequence[str]] | None = None,
    jobs: int = 1,
) -> Manifest:
    """Export ``tables`` (or a read-only ``query``) as of ``as_of``; return the manifest.

    In ``query`` (one SELECT, checked by :mod:`temporal.sandbox`), every
    temporal table is seen as of ``as_of``; a plain table or view may be read
    only if named in ``unversioned`` (recorded in the manifest). Its rows go to
    ``out_dir/<name>/``, sorted by every column. ``out_dir`` must be new or
    empty, or hold a previous export and ``force`` be given. ``wait`` bounds,
    in seconds, how long to wait for writers that could still commit a version
    as of ``as_of``. With ``signing_key``, ``manifest.sig`` proves the manifest
    came from whoever holds the key (see :mod:`temporal.signing`).

    With a ``spine`` (a CSV or Parquet file) or a ``spine_query``, the export
    is a point-in-time join instead (see :mod:`temporal.pitjoin`): each spine
    row gets the data columns of each table in ``join`` (table -> spine key
    column(s)) as of the row's own time in column ``at``.

    ``jobs`` tables are written at once on PostgreSQL, each by its own connection
    in the export's snapshot; the files and manifest are the same for any ``jobs``.
    """
    check_jobs(jobs)
    if spine is not None or spine_query is not None or join or at is not None:
        if tables or query is not None or unversioned:
            raise ExportError("a point-in-time join exports its spine; do not also name "
                              "tables, a query or unversioned tables")
        from temporal.pitjoin import export_join

        return export_join(source, out_dir, as_of=as_of, spine=spine, spine_query=spine_query,
                           at=at, join=join or {}, name=name or "spine", format=format,
                           force=force, signing_key=signing_key, rows_per_file=rows_per_file,
                           wait=wait, on_progress=on_progress)
    name = name or "query"
    at_ = aware(as_of, what="as_of")
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if (query is None) == (not tables):
        raise ExportError("export either tables or a query (exactly one of them)")
    if tables and len(set(tables)) != len(tables):
        raise ExportError("a table is named twice")
    if unversioned and query is None:
        raise ExportError("unversioned tables can be read only by a query")
    if query is not None and not name.replace("_", "").replace("-", "").isalnum():
        raise ExportError(f"the query's name {name!r} must be letters, digits, - and _")
    if rows_per_file < 1:
        raise ExportError("rows_per_file must be at least 1")
    plan = ExportPlan(at=at_, query=query, fmt=format, rows_per_file=rows_per_file, force=force,
                      on_progress=on_progress, unversioned=tuple(unversioned),
                      signing_key=signing_key, jobs=jobs)
    return run_export(source, Path(out_dir), plan, tables=tables, name=name, wait=wait)


def check_jobs(jobs: int) -> None:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ExportError(f"jobs must be a whole number of at least 1, not {jobs!r}")


@dataclass(frozen=True)
class ExportPlan:
    """How to write an export (everything but where the rows come from)."""

    at: datetime
    query: str | None
    fmt: str
    rows_per_file: int
    force: bool = False
    on_progress: Callable[[Progress], None] | None = None
    digest: str = CSV_ROWS  # verify re-exports with the algorithm its manifest names
    copy: bool = True  # canonical lines straight from the database where every column allows
    unversioned: tuple[str, ...] = ()
    signing_key: bytes | None = field(default=None, repr=False)
    jobs: int = 1  # tables written at once (PostgreSQL); the files are the same either way
    # Change feeds (temporal.changes) and point-in-time joins (temporal.pitjoin):
    changes: dict[str, str] | None = None  # the manifest's since/until
    spine: dict[str, Any] | None = None  # the manifest's spine, keys and tables
    attachments: tuple[tuple[str, Path], ...] = ()  # (path in the export, file) copied in


def run_export(source: str | Engine, out: Path, plan: ExportPlan, *, tables: Sequence[str] | None,
               name: str, wait: float) -> Manifest:
    def sources(snapshot: _Snapshot) -> list[_Source]:
        if plan.query is not None:
            return [_query_source(snapshot, name, plan.query)]
        return [_table_source(snapshot.conn, t, plan.at) for t in sorted(tables or ())]

    return export_sources(source, out, plan, wait=wait, sources=sources,
                          query=plan.query, unversioned=plan.unversioned)


def export_sources(source: str | Engine, out: Path, plan: ExportPlan, *, wait: float,
                   sources: Callable[[_Snapshot], list[_Source]],
                   tables: list[str] | None = None,
                   query: str | None = None, unversioned: Unversioned = (),
                   prepare: Callable[[Connection], None] | None = None) -> Manifest:
    """The export pipeline: a snapshot as of ``plan.at``, then ``sources(snapshot)``
    written and described (the manifest lists ``tables``; by default the sources'
    names, or none for a query), staged and moved into place."""
    if plan.digest not in DIGEST_ROWS:
        raise ExportError(f"unknown content digest algorithm {plan.digest!r}")
    with engine_for(source) as engine:
        protect = _database_files(engine)
        outdir.check(out, plan.force, protect)  # refuse before any work
        snapshot = _open_snapshot(engine, plan.at, wait, query, unversioned, prepare)
        try:
            chosen = sources(snapshot)
            with outdir.staging(out, plan.force, protect) as partial:
                manifest = _export_in(snapshot, partial, chosen, plan, tables=tables)
                if plan.signing_key is not None:
                    signing.sign(partial / MANIFEST_NAME, plan.signing_key)
            manifest.path = out / MANIFEST_NAME
            return manifest
        finally:
            snapshot.close()


def _database_files(engine: Engine) -> list[Path]:
    """The files of a SQLite database (an export must never replace them)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return []
    return [Path(database + suffix) for suffix in ("", "-wal", "-shm", "-journal")]


def _export_in(snapshot: _Snapshot, out: Path, sources: list[_Source], plan: ExportPlan,
               tables: list[str] | None = None) -> Manifest:
    conn = snapshot.conn
    for inside, original in plan.attachments:
        shutil.copyfile(original, out / inside)
    # An older manifest's ``all`` hashed every table's rows in turn (verify re-exports
    # it so); this version's hashes the tables' digests.
    rows_in_turn = hashlib.sha256() if len(sources) > 1 and plan.digest in ALL_OVER_ROWS \
        else None
    written = _write_tables(snapshot, out, sources, plan, rows_in_turn)
    files = [entry for entries, _ in written for entry in entries]
    per_table = {src.name: digest for src, (_, digest) in zip(sources, written, strict=True)}
    overall = rows_in_turn.hexdigest() if rows_in_turn is not None else all_digest(per_table)
    server = conn.dialect.server_version_info or ()
    fmt = plan.fmt
    manifest = Manifest(
        as_of=isoformat(plan.at), format=fmt,
        writer={**SETTINGS[fmt], "rows_per_file": plan.rows_per_file},
        tables=tables if tables is not None else
        [] if plan.query is not None else [s.name for s in sources], query=plan.query,
        schema={s.name: [{"name": c, **t.describe()}
                         for c, t in zip(s.columns, s.types, strict=True)] for s in sources},
        order_by={s.name: s.order_by for s in sources}, files=files,
        content_digest={"algorithm": plan.digest, "all": overall,
                        **{f"table:{k}": v for k, v in per_table.items()}},
        library=_library_versions(fmt),
        database={"dialect": snapshot.dialect,
                  "server_version": ".".join(str(p) for p in server)},
        settings=snapshot.settings,
        unversioned=list(snapshot.query.unversioned) if snapshot.query is not None else [],
        changes=plan.changes, spine=plan.spine,
    )
    manifest.write(out)
    return manifest


def _write_tables(snapshot: _Snapshot, out: Path, sources: list[_Source], plan: ExportPlan,
                  rows_in_turn: Any | None) -> list[tuple[list[FileEntry], str]]:
    """Each source's file entries and digest: with ``plan.jobs`` > 1 on PostgreSQL,
    several tables at once, each worker in the export's snapshot (:mod:`temporal.parallel`)."""
    conn = snapshot.conn
    jobs = min(plan.jobs, len(sources))
    if (jobs <= 1 or rows_in_turn is not None or snapshot.dialect != "postgresql"
            or any(src.reopen is None for src in sources)):
        return [_write_table(src, out, plan, rows_in_turn, conn) for src in sources]
    snapshot_id = parallel.share_snapshot(conn)
    order = parallel.biggest_first(conn, [src.name for src in sources])
    if plan.on_progress is not None:  # called from every worker: one at a time
        lock, report = threading.Lock(), plan.on_progress

        def locked(progress: Progress) -> None:
            with lock:
                report(progress)

        plan = replace(plan, on_progress=locked)
    others: list[Connection] = []
    try:
        for _ in range(jobs - 1):
            try:
                other = conn.engine.connect()
            except exc.TimeoutError:
                raise ExportError(f"could not open {jobs} connections for {jobs} jobs: the "
                                  "engine's connection pool is smaller; use fewer jobs") from None
            others.append(other)
            parallel.join_snapshot(other, snapshot_id)
            _pin(other)

        def work(src: _Source, worker: Connection) -> tuple[list[FileEntry], str]:
            if worker is not conn:
                assert src.reopen is not None
                src = src.reopen(worker)
            return _write_table(src, out, plan, None, worker)

        return parallel.run(sources, order, [conn, *others], work)
    finally:
        for other in others:
            other.close()


def _library_versions(fmt: str) -> dict[str, str]:
    versions = {"name": "temporal", "version": VERSION}
    if fmt == "parquet":
        import pyarrow

        versions["pyarrow"] = pyarrow.__version__
    return versions

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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table, exc, func, select, text

from temporal import _backend, authorizer, outdir, pgcopy, sandbox, signing
from temporal._version import VERSION
from temporal.archival import all_versions
from temporal.catalog import temporal_shape
from temporal.clock import aware, isoformat
from temporal.database import engine_for
from temporal.errors import ExportError, InvalidTimeError, UnsupportedError
from temporal.manifest import (
    CSV_ROWS,
    DIGEST_ROWS,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    column_encoder,
    csv_row,
)
from temporal.model import CREATED_AT, EXPIRED_AT, key_columns
from temporal.query import valid_at
from temporal.types import UTCDateTime
from temporal.writers import SETTINGS, Batch, Part, part_maker

FORMATS = ("csv", "jsonl", "parquet")
ROWS_PER_FILE = 1_000_000
FETCH_ROWS = 10_000

_STREAM = {"stream_results": True, "yield_per": FETCH_ROWS}

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
    types: list[str]
    order_by: list[str]
    rows: Callable[[], Iterator[Sequence[Any]]]
    copy: str | None = None  # PostgreSQL: a query of canonical text for COPY
    count: Callable[[], int] | None = None  # for progress: the rows to come


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
    return table


def _table_source(conn: Connection, name: str, at: datetime) -> _Source:
    table = _temporal_table(conn, name)
    key = key_columns(table)
    data = [c for c in table.c if c.name not in (CREATED_AT, EXPIRED_AT)]
    rest = [c for c in data if c not in key]
    versions = all_versions(conn, table)  # archived versions included
    stmt = (select(*[versions.c[c.name] for c in data]).where(valid_at(versions, at))
            .order_by(*[versions.c[c.name] for c in (*key, *rest)]))
    dialect = conn.dialect

    def rows() -> Iterator[Sequence[Any]]:
        yield from conn.execute(stmt, execution_options=_STREAM)

    def count() -> int:
        # Only asked for a progress bar on a terminal: one index-friendly pass.
        counted = select(func.count()).select_from(versions).where(valid_at(versions, at))
        return int(conn.execute(counted).scalar_one())

    copy = pgcopy.copy_query(conn, name, data, [*key, *rest], at) \
        if dialect.name == "postgresql" else None
    return _Source(
        name=name, columns=[c.name for c in data],
        types=[c.type.compile(dialect=dialect) for c in data],
        order_by=[c.name for c in key] + [c.name for c in rest], rows=rows, copy=copy,
        count=count,
    )


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


def _query_source(snapshot: _Snapshot, name: str) -> _Source:
    """The sandboxed query's rows, sorted by every output column."""
    checked = snapshot.query
    assert checked is not None
    conn = snapshot.conn

    def rows() -> Iterator[Sequence[Any]]:
        try:
            if checked.raw_cursor:  # SQLite: the driver runs the text as written
                cursor = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                    checked.sql)
                while batch := cursor.fetchmany(FETCH_ROWS):
                    yield from batch
            else:  # PostgreSQL: a statement the library wrote, over the checked view
                yield from conn.exec_driver_sql(checked.sql, execution_options=_STREAM)
        except (exc.DBAPIError, sqlite3.Error) as error:
            raise sandbox.run_error(error, snapshot.guard) from None

    return _Source(name=name, columns=checked.columns, types=["" for _ in checked.columns],
                   order_by=checked.columns, rows=rows)


@dataclass
class _Snapshot:
    conn: Connection
    dialect: str
    settings: dict[str, str] = field(default_factory=dict)
    query: sandbox.Sandboxed | None = None
    guard: Any = None  # SQLite: the authorizer, whose refusal explains a failed read
    temporary: bool = False  # PostgreSQL: temporary objects made for the read (a spine)

    def close(self) -> None:
        try:
            if self.guard is not None:
                authorizer.release(self.conn)
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
        for name, value in PG_SETTINGS.items():
            conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
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
             ) -> Iterator[tuple[Batch, bytes]]:
    """The table's rows in batches, each with the bytes it adds to the content digest.

    A CSV export on PostgreSQL with canonical SQL for every column takes its
    lines straight from COPY: they are the file's bytes and the digest's bytes.
    """
    if source.copy is not None and plan.copy and plan.fmt == "csv" and plan.digest == CSV_ROWS:
        for copied in pgcopy.copy_batches(conn, source.copy, FETCH_ROWS):
            batch = Batch(copied)
            yield batch, batch.joined
        return
    digest_row = DIGEST_ROWS[plan.digest]
    other_digest = digest_row is not csv_row  # else the digest's rows are the CSV lines
    encoders: list[Any] = []
    rows: list[Sequence[Any]] = []
    lines: list[bytes] = []
    digested: list[bytes] = []
    for row in source.rows():
        if not encoders:
            encoders = [column_encoder(v) for v in row]
        canon = [encode(v) for encode, v in zip(encoders, row, strict=True)]
        rows.append(row)
        lines.append(csv_row(canon))
        if other_digest:
            digested.append(digest_row(canon))
        if len(rows) == FETCH_ROWS:
            batch = Batch(lines, rows)
            yield batch, b"".join(digested) if other_digest else batch.joined
            rows, lines, digested = [], [], []
    if rows:
        batch = Batch(lines, rows)
        yield batch, b"".join(digested) if other_digest else batch.joined


def _write_table(source: _Source, out_dir: Path, plan: ExportPlan, digest: Any,
                 conn: Connection) -> tuple[list[FileEntry], str]:
    """Write one table's parts; return their entries and the table's content digest."""
    folder = out_dir / source.name
    folder.mkdir(parents=True, exist_ok=True)
    open_part = part_maker(plan.fmt, source.columns)
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

    expected = source.count() if plan.on_progress is not None and source.count else None
    if plan.on_progress is not None:
        plan.on_progress(Progress(source.name, 0, expected))
    for batch, digested in _batches(source, plan, conn):
        table_digest.update(digested)
        digest.update(digested)
        done = 0
        while done < len(batch):  # a batch may straddle parts
            if current is None:
                current = start()
            take = min(len(batch) - done, plan.rows_per_file - in_part)
            current.add(batch.cut(done, done + take) if take < len(batch) else batch)
            done += take
            in_part += take
            if in_part == plan.rows_per_file:
                finish(current)
                current = None
        total += len(batch)
        if plan.on_progress is not None:
            plan.on_progress(Progress(source.name, total, expected))
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
    """
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
                      signing_key=signing_key)
    return run_export(source, Path(out_dir), plan, tables=tables, name=name, wait=wait)


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
    copy: bool = True  # PostgreSQL CSV through COPY where every column allows it
    unversioned: tuple[str, ...] = ()
    signing_key: bytes | None = field(default=None, repr=False)
    # Change feeds (temporal.changes) and point-in-time joins (temporal.pitjoin):
    changes: dict[str, str] | None = None  # the manifest's since/until
    spine: dict[str, Any] | None = None  # the manifest's spine, keys and tables
    attachments: tuple[tuple[str, Path], ...] = ()  # (path in the export, file) copied in


def run_export(source: str | Engine, out: Path, plan: ExportPlan, *, tables: Sequence[str] | None,
               name: str, wait: float) -> Manifest:
    if plan.digest not in DIGEST_ROWS:
        raise ExportError(f"unknown content digest algorithm {plan.digest!r}")
    with engine_for(source) as engine:
        protect = _database_files(engine)
        outdir.check(out, plan.force, protect)  # refuse before any work
        snapshot = _open_snapshot(engine, plan.at, wait, plan.query, plan.unversioned)
        try:
            if plan.query is not None:
                sources = [_query_source(snapshot, name)]
            else:
                sources = [_table_source(snapshot.conn, t, plan.at) for t in sorted(tables or ())]
            with outdir.staging(out, plan.force, protect) as partial:
                manifest = _export_in(snapshot, partial, sources, plan)
                if plan.signing_key is not None:
                    signing.sign(partial / MANIFEST_NAME, plan.signing_key)
            manifest.path = out / MANIFEST_NAME
            return manifest
        finally:
            snapshot.close()


def export_sources(source: str | Engine, out: Path, plan: ExportPlan, *, wait: float,
                   sources: Callable[[_Snapshot], list[_Source]], tables: list[str],
                   query: str | None = None, unversioned: Unversioned = (),
                   prepare: Callable[[Connection], None] | None = None) -> Manifest:
    """The export pipeline for rows from elsewhere (a change feed, a join): a snapshot
    as of ``plan.at``, then ``sources(snapshot)`` written and described like tables."""
    if plan.digest not in DIGEST_ROWS:
        raise ExportError(f"unknown content digest algorithm {plan.digest!r}")
    with engine_for(source) as engine:
        protect = _database_files(engine)
        outdir.check(out, plan.force, protect)
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
    digest = hashlib.sha256()
    files: list[FileEntry] = []
    per_table: dict[str, str] = {}
    for src in sources:
        entries, table_digest = _write_table(src, out, plan, digest, conn)
        files += entries
        per_table[src.name] = table_digest
    server = conn.dialect.server_version_info or ()
    fmt = plan.fmt
    manifest = Manifest(
        as_of=isoformat(plan.at), format=fmt,
        writer={**SETTINGS[fmt], "rows_per_file": plan.rows_per_file},
        tables=tables if tables is not None else
        [] if plan.query is not None else [s.name for s in sources], query=plan.query,
        schema={s.name: [{"name": c, "type": t} for c, t in zip(s.columns, s.types, strict=True)]
                for s in sources},
        order_by={s.name: s.order_by for s in sources}, files=files,
        content_digest={"algorithm": plan.digest, "all": digest.hexdigest(),
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


def _library_versions(fmt: str) -> dict[str, str]:
    versions = {"name": "temporal", "version": VERSION}
    if fmt == "parquet":
        import pyarrow

        versions["pyarrow"] = pyarrow.__version__
    return versions

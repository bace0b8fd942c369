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
split into parts of at most ``rows_per_file`` rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, MetaData, Table, exc, inspect, select, text

from temporal import _backend
from temporal._version import VERSION
from temporal.clock import aware, isoformat
from temporal.database import engine_for
from temporal.errors import InvalidTimeError, TemporalError, UnsupportedError
from temporal.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    canonical,
    canonical_row,
    file_sha256,
    read_manifest,
)
from temporal.model import CREATED_AT, EXPIRED_AT
from temporal.query import valid_at
from temporal.types import UTCDateTime

FORMATS = ("csv", "jsonl", "parquet")
ROWS_PER_FILE = 1_000_000
FETCH_ROWS = 10_000

_STREAM = {"stream_results": True, "yield_per": FETCH_ROWS}

PG_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
}


class ExportError(TemporalError):
    """An export that cannot be made as asked (unknown table, busy writers, bad output)."""


@dataclass
class Progress:
    """Reported after each batch of rows: ``on_progress(Progress)``."""

    table: str
    rows: int


# -- reading -----------------------------------------------------------------------


@dataclass
class _Source:
    name: str
    columns: list[str]
    types: list[str]
    order_by: list[str]
    rows: Callable[[], Iterator[Sequence[Any]]]


def _temporal_table(conn: Connection, name: str) -> Table:
    try:
        table = Table(name, MetaData(), autoload_with=conn)
    except exc.NoSuchTableError:
        raise ExportError(f"no table named {name!r} in this database") from None
    names = set(table.c.keys())
    if not {CREATED_AT, EXPIRED_AT} <= names or CREATED_AT not in table.primary_key.columns:
        raise ExportError(
            f"table {name!r} is not temporal (no created_at/expired_at period); "
            "its past was never recorded, so it cannot be exported as of a moment"
        )
    for period in (CREATED_AT, EXPIRED_AT):
        table.c[period].type = UTCDateTime()
    return table


def _table_source(conn: Connection, name: str, at: datetime) -> _Source:
    table = _temporal_table(conn, name)
    key = [c for c in table.primary_key.columns if c.name != CREATED_AT]
    data = [c for c in table.c if c.name not in (CREATED_AT, EXPIRED_AT)]
    rest = [c for c in data if c not in key]
    stmt = select(*data).where(valid_at(table, at)).order_by(*key, *rest)
    dialect = conn.dialect

    def rows() -> Iterator[Sequence[Any]]:
        yield from conn.execute(stmt, execution_options=_STREAM)

    return _Source(
        name=name, columns=[c.name for c in data],
        types=[c.type.compile(dialect=dialect) for c in data],
        order_by=[c.name for c in key] + [c.name for c in rest], rows=rows,
    )


def table_history(source: str | Engine, name: str, key: Sequence[str]
                  ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """All versions of one entity of a table, by name, oldest first (for the CLI).

    ``key`` holds the key values as text, converted to each key column's type.
    """
    with engine_for(source) as engine, engine.connect() as conn:
        table = _temporal_table(conn, name)
        cols = [c for c in table.primary_key.columns if c.name != CREATED_AT]
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
        stmt = (select(*table.c).where(*(c == v for c, v in zip(cols, values, strict=True)))
                .order_by(table.c[CREATED_AT]))
        rows = [tuple(r) for r in conn.execute(stmt)]
    return [c.name for c in table.c], rows


def _query_source(conn: Connection, name: str, query: str, dialect: str) -> _Source:
    """A read-only query, its rows sorted by every output column."""
    body = query.strip().rstrip(";").strip()
    if not body:
        raise ExportError("the query is empty")
    # No bind parameters here: the text goes to the driver as written ('%' escaped
    # for psycopg's placeholder syntax).
    wrap = f"SELECT * FROM ({body}) AS temporal_query"

    def escape(sql: str) -> str:
        return sql.replace("%", "%%") if dialect == "postgresql" else sql

    try:
        columns = list(conn.exec_driver_sql(escape(wrap + " LIMIT 0")).keys())
    except exc.DBAPIError as error:
        raise ExportError(f"the query failed: {_first_line(error)}") from None
    ordered = wrap + " ORDER BY " + ", ".join(str(i) for i in range(1, len(columns) + 1))

    def rows() -> Iterator[Sequence[Any]]:
        try:
            yield from conn.exec_driver_sql(escape(ordered), execution_options=_STREAM)
        except exc.DBAPIError as error:
            raise ExportError(f"the query failed: {_first_line(error)}") from None

    return _Source(name=name, columns=columns, types=["" for _ in columns],
                   order_by=columns, rows=rows)


def _first_line(error: exc.DBAPIError) -> str:
    return str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__


def _shadow_tables(conn: Connection, at: datetime, dialect: str) -> None:
    """Temporary views named like every temporal table, showing it as of ``at``.

    Unqualified table names in a query then read the past; the timestamp is
    rendered by the library from a datetime, identifiers are quoted.
    """
    quote = conn.dialect.identifier_preparer.quote
    inspector = inspect(conn)
    schema = inspector.default_schema_name or "main"
    if dialect == "postgresql":
        moment = f"'{isoformat(at)}'::timestamptz"
    else:
        moment = "'" + at.strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
    for name in inspector.get_table_names():
        try:
            table = _temporal_table(conn, name)
        except ExportError:
            continue
        data = ", ".join(quote(c.name) for c in table.c if c.name not in (CREATED_AT, EXPIRED_AT))
        conn.exec_driver_sql(
            f"CREATE TEMP VIEW {quote(name)} AS SELECT {data} FROM {quote(schema)}.{quote(name)} "
            f"WHERE created_at <= {moment} AND (expired_at IS NULL OR expired_at > {moment})"
        )


@dataclass
class _Snapshot:
    conn: Connection
    dialect: str
    settings: dict[str, str] = field(default_factory=dict)
    shadowed: bool = False

    def close(self) -> None:
        try:
            self.conn.rollback()
            if self.shadowed and self.dialect == "postgresql":
                self.conn.exec_driver_sql("DISCARD TEMP")
                self.conn.commit()
            elif self.shadowed:
                self.conn.exec_driver_sql("PRAGMA query_only = 0")
                self.conn.commit()
        finally:
            self.conn.close()


def _open_snapshot(engine: Engine, at: datetime, wait: float, shadow: bool = False
                   ) -> _Snapshot:
    """A read transaction in which no version stamped at or before ``at`` can still appear.

    With ``shadow``, temporal tables are replaced by as-of views and the
    transaction cannot write.
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
        if shadow:  # temp views outlive this commit; the read-only snapshot comes next
            _shadow_tables(conn, at, dialect)
            conn.commit()
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        conn.begin()
        conn.execute(text("SET TRANSACTION READ ONLY"))
        for name, value in PG_SETTINGS.items():
            conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
        return _Snapshot(conn, dialect, dict(PG_SETTINGS), shadowed=shadow)
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
    if shadow:
        _shadow_tables(conn, at, dialect)
        conn.exec_driver_sql("PRAGMA query_only = 1")
    return _Snapshot(conn, dialect, shadowed=shadow)


def _wait_for_writers(conn: Connection, at: datetime, wait: float) -> None:
    """PostgreSQL: wait until no transaction in flight could still commit a version <= at."""
    # Every transaction holding an xid holds a lock on it (pg_locks needs no
    # special privilege). One that began after ``at`` cannot stamp <= at; one
    # whose start we cannot see (another role, a prepared transaction) might.
    in_doubt = text(
        "SELECT l.transactionid::text FROM pg_locks l "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted "
        "AND (l.pid IS NULL OR l.pid <> pg_backend_pid()) "
        "AND (a.xact_start IS NULL OR a.xact_start <= :at)"
    )
    still = text("SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' "
                 "AND mode = 'ExclusiveLock' AND granted "
                 "AND transactionid::text = ANY(CAST(:xids AS text[]))")
    xids = [row[0] for row in conn.execute(in_doubt, {"at": at})]
    conn.commit()
    deadline = time.monotonic() + wait
    while xids:
        if conn.execute(still, {"xids": xids}).scalar_one() == 0:
            conn.commit()
            return
        conn.commit()
        if time.monotonic() > deadline:
            raise ExportError(
                f"{len(xids)} transaction(s) that began by {isoformat(at)} are still open after "
                f"{wait:g}s; one of them may yet commit a version as of that moment. Retry "
                "when they finish, or raise the wait"
            )
        time.sleep(0.05)


# -- writing -----------------------------------------------------------------------


class _HashingFile:
    """A binary file that hashes and counts what is written to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[bytes] = open(path, "wb")  # noqa: SIM115
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.sha256.update(data)
        self.size += len(data)

    def close(self) -> tuple[str, int]:
        self.handle.close()
        return self.sha256.hexdigest(), self.size


def _csv_line(values: Iterable[Any]) -> bytes:
    # NULL is an empty field; every other value is quoted, so "" is an empty string.
    fields = []
    for value in values:
        text_value = canonical(value)
        fields.append("" if text_value is None else '"' + text_value.replace('"', '""') + '"')
    return (",".join(fields) + "\n").encode()


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float) and value == value and value not in (float("inf"), -float("inf")):
        return value
    return canonical(value)


WRITERS: dict[str, dict[str, Any]] = {
    "csv": {"encoding": "utf-8", "delimiter": ",", "quote": '"', "quoting": "all non-NULL",
            "null": "empty unquoted field", "line_terminator": "\\n", "header": True},
    "jsonl": {"encoding": "utf-8", "object_per_line": True, "separators": [",", ":"],
              "ensure_ascii": False, "keys": "column order",
              "non_json_values": "canonical text"},
}


def _write_table(source: _Source, out_dir: Path, fmt: str, rows_per_file: int,
                 digest: Any, on_progress: Callable[[Progress], None] | None
                 ) -> tuple[list[FileEntry], str]:
    folder = out_dir / source.name
    folder.mkdir(parents=True, exist_ok=True)
    table_digest = hashlib.sha256()
    entries: list[FileEntry] = []
    current: _HashingFile | None = None
    in_part = total = 0

    def start_part() -> _HashingFile:
        part = _HashingFile(folder / f"part-{len(entries):05d}.{fmt}")
        if fmt == "csv":
            part.write(_csv_line(source.columns))
        return part

    def finish_part(part: _HashingFile, rows: int) -> None:
        sha, size = part.close()
        entries.append(FileEntry(path=part.path.relative_to(out_dir).as_posix(),
                                 table=source.name, rows=rows, bytes=size, sha256=sha))

    buffer = io.BytesIO()
    for row in source.rows():
        if current is None:
            current, in_part = start_part(), 0
        encoded = canonical_row(tuple(row))
        table_digest.update(encoded)
        digest.update(encoded)
        if fmt == "csv":
            buffer.write(_csv_line(row))
        else:
            buffer.write(json.dumps(
                {c: _json_value(v) for c, v in zip(source.columns, row, strict=True)},
                ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        in_part += 1
        total += 1
        if total % FETCH_ROWS == 0:
            current.write(buffer.getvalue())
            buffer = io.BytesIO()
            if on_progress is not None:
                on_progress(Progress(source.name, total))
        if in_part == rows_per_file:
            current.write(buffer.getvalue())
            buffer = io.BytesIO()
            finish_part(current, in_part)
            current = None
    if current is None and not entries:
        current, in_part = start_part(), 0  # an empty table still gets its (header-only) file
    if current is not None:
        current.write(buffer.getvalue())
        finish_part(current, in_part)
    if on_progress is not None:
        on_progress(Progress(source.name, total))
    return entries, table_digest.hexdigest()


# -- the public functions --------------------------------------------------------------


def export(
    source: str | Engine,
    out_dir: str | Path,
    *,
    as_of: datetime,
    tables: Sequence[str] | None = None,
    query: str | None = None,
    name: str = "query",
    format: str = "csv",
    force: bool = False,
    rows_per_file: int = ROWS_PER_FILE,
    wait: float = 30.0,
    on_progress: Callable[[Progress], None] | None = None,
) -> Manifest:
    """Export ``tables`` (or a read-only ``query``) as of ``as_of``; return the manifest.

    In ``query``, every temporal table is seen as of ``as_of`` (refer to tables
    without a schema); its rows go to ``out_dir/<name>/``, sorted by every
    column. ``out_dir`` must be empty or missing unless ``force``. ``wait``
    bounds, in seconds, how long to wait for writers that could still commit a
    version as of ``as_of``.
    """
    at = aware(as_of, what="as_of")
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "parquet":
        raise UnsupportedError("parquet exports are not available yet; use csv or jsonl")
    if (query is None) == (not tables):
        raise ExportError("export either tables or a query (exactly one of them)")
    if tables and len(set(tables)) != len(tables):
        raise ExportError("a table is named twice")
    if query is not None and not name.replace("_", "").replace("-", "").isalnum():
        raise ExportError(f"the query's name {name!r} must be letters, digits, - and _")
    out = Path(out_dir)
    _check_out_dir(out, force)
    with engine_for(source) as engine:
        snapshot = _open_snapshot(engine, at, wait, shadow=query is not None)
        try:
            if query is not None:
                sources = [_query_source(snapshot.conn, name, query, snapshot.dialect)]
            else:
                sources = [_table_source(snapshot.conn, t, at) for t in sorted(tables or ())]
            return _export_in(snapshot, out, at, sources, query, format, rows_per_file,
                              force, on_progress)
        finally:
            snapshot.close()


def _export_in(snapshot: _Snapshot, out: Path, at: datetime, sources: list[_Source],
               query: str | None, fmt: str, rows_per_file: int, force: bool,
               on_progress: Callable[[Progress], None] | None) -> Manifest:
    conn = snapshot.conn
    _make_out_dir(out, force)  # only now: a refused export leaves nothing behind
    digest = hashlib.sha256()
    files: list[FileEntry] = []
    per_table: dict[str, str] = {}
    for src in sources:
        entries, table_digest = _write_table(src, out, fmt, rows_per_file, digest, on_progress)
        files += entries
        per_table[src.name] = table_digest
    server = conn.dialect.server_version_info or ()
    manifest = Manifest(
        as_of=isoformat(at), format=fmt, writer={**WRITERS[fmt], "rows_per_file": rows_per_file},
        tables=[] if query is not None else [s.name for s in sources], query=query,
        schema={s.name: [{"name": c, "type": t} for c, t in zip(s.columns, s.types, strict=True)]
                for s in sources},
        order_by={s.name: s.order_by for s in sources}, files=files,
        content_digest={"algorithm": "sha256 over canonical JSON rows", "all": digest.hexdigest(),
                        **{f"table:{k}": v for k, v in per_table.items()}},
        library={"name": "temporal", "version": VERSION},
        database={"dialect": snapshot.dialect,
                  "server_version": ".".join(str(p) for p in server)},
        settings=snapshot.settings,
    )
    manifest.write(out)
    return manifest


def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} is not empty; choose another directory or pass --force")


def _make_out_dir(out: Path, force: bool) -> None:
    _check_out_dir(out, force)
    if out.exists():
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


@dataclass
class VerifyReport:
    """What ``verify`` checked and what did not match; ``ok`` only when nothing."""

    manifest: Path
    files_checked: int = 0
    rows: int = 0
    database_checked: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(manifest: str | Path, source: str | Engine | None = None) -> VerifyReport:
    """Check an export against its manifest; with ``source``, re-export and compare.

    Never raises for a mismatch: the report lists every problem found. A
    manifest that cannot be read or was altered raises ManifestError.
    """
    loaded = read_manifest(manifest)
    assert loaded.path is not None
    report = VerifyReport(manifest=loaded.path, rows=loaded.rows)
    root = loaded.path.parent
    for entry in loaded.files:
        path = root / entry.path
        if not path.is_file():
            report.problems.append(f"{entry.path}: missing")
            continue
        sha, size = file_sha256(path)
        report.files_checked += 1
        if size != entry.bytes:
            report.problems.append(f"{entry.path}: {size} bytes, manifest says {entry.bytes}")
        elif sha != entry.sha256:
            report.problems.append(f"{entry.path}: sha256 differs from the manifest")
    if source is not None:
        report.database_checked = True
        with tempfile.TemporaryDirectory(prefix="temporal-verify-") as tmp:
            try:
                fresh = export(source, tmp, as_of=datetime.fromisoformat(
                    loaded.as_of.replace("Z", "+00:00")), tables=loaded.tables or None,
                    query=loaded.query, name=next(iter(loaded.schema), "query"),
                    format=loaded.format, rows_per_file=loaded.writer.get(
                        "rows_per_file", ROWS_PER_FILE))
            except ExportError as error:
                report.problems.append(f"database: {error}")
                return report
            for key, value in loaded.content_digest.items():
                if fresh.content_digest.get(key) != value:
                    what = "all tables" if key == "all" else key.removeprefix("table:")
                    report.problems.append(
                        f"database: the data as of {loaded.as_of} differs from the export "
                        f"({what}); history was changed after the export")
            theirs = {f.path: f.sha256 for f in fresh.files}
            for entry in loaded.files:
                if theirs.get(entry.path) != entry.sha256 and not any(
                        "differs from the export" in p for p in report.problems):
                    report.problems.append(f"database: re-export of {entry.path} differs")
    return report


def load(manifest: str | Path, *, as_: str = "pandas", table: str | None = None) -> Any:
    """Verify an export, then load one table as a pandas DataFrame or pyarrow Table."""
    report = verify(manifest)
    if not report.ok:
        raise ManifestError("refusing to load an export that does not verify: "
                            + "; ".join(report.problems))
    loaded = read_manifest(manifest)
    assert loaded.path is not None
    name = table or (loaded.tables[0] if len(loaded.tables) == 1 else None)
    if name is None:
        raise ExportError(f"the export holds {', '.join(loaded.tables)}; pass table=")
    paths = [loaded.path.parent / f.path for f in loaded.files if f.table == name]
    if not paths:
        raise ExportError(f"the export holds no table {name!r}")
    if as_ not in ("pandas", "pyarrow"):
        raise ExportError(f"as_ must be 'pandas' or 'pyarrow', not {as_!r}")
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.json as pajson
    except ImportError:
        raise ExportError("loading exports needs pyarrow: pip install 'temporal[parquet]'"
                          ) from None
    if loaded.format == "csv":
        # An unquoted empty field is NULL; a quoted one ("") is the empty string.
        options = pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
        parts = [pacsv.read_csv(p, convert_options=options) for p in paths]
    else:
        parts = [pajson.read_json(p) for p in paths]
    table_data = pa.concat_tables(parts)
    return table_data.to_pandas() if as_ == "pandas" else table_data


"""Point-in-time joins: each training example's features as of its own moment.

A *spine* holds the events a model learns from: an entity key, an event time
and any labels, one row per example. Joining it to the *current* features -
or to one snapshot - leaks the future into training. ``export(...,
spine=FILE or spine_query=SQL, at=COLUMN, join={TABLE: SPINE_COLUMN})`` gives
every spine row each joined table's data columns as of that row's own time::

    version.created_at <= row.at < version.expired_at    (archive included)

so no value can be newer than its row's event. Output columns are the spine's,
then each table's as ``<table>.<column>``, NULL where no version was valid
(before the first version, after a delete, a key with no history). Spine rows
whose time is after the export's ``as_of`` are refused: their features may not
be written yet, so a later re-export could differ.

The join is one set-based statement in the database - a LEFT JOIN of the
spine to each table on its key and the validity interval - streamed through
the export pipeline (on PostgreSQL as canonical CSV from COPY where every
column allows it), in the export's snapshot as of ``as_of``:

* a **file** spine (CSV or Parquet, see :mod:`temporal.spine`) is loaded into
  a temporary table first; a copy goes into the export folder, and the
  manifest records its sha256, so ``verify`` can re-run the join anywhere;
* a **query** spine reads temporal tables as of ``as_of`` like ``--query``;
  plain tables it reads (the labels) are allowed and recorded as unversioned.

Times without a zone (a CSV's ``2026-03-01 12:00:00``, SQLite text, a
PostgreSQL ``timestamp``) are UTC, as everywhere in ``temporal``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, exc, inspect
from sqlalchemy.types import TypeEngine

from temporal import authorizer, pgcopy
from temporal.archival import reads_archive_apart
from temporal.catalog import ARCHIVE_SUFFIX, archive_name
from temporal.clock import UTC, aware, isoformat
from temporal.encoding import OTHER, ColumnType, column_type, read_as_text
from temporal.errors import ExportError
from temporal.export import (
    _STREAM,
    FETCH_ROWS,
    FORMATS,
    ExportPlan,
    Progress,
    _Snapshot,
    _Source,
    _temporal_table,
    export_sources,
)
from temporal.manifest import Manifest, file_sha256
from temporal.model import CREATED_AT, EXPIRED_AT, key_columns
from temporal.sandbox import VIEW
from temporal.spine import (
    FILE_FORMATS,
    SPINE_TABLE,
    SQLITE_TEXT_TIME,
    UTC_FUNCTION,
    SpineColumns,
    SpineFile,
    escape,
    file_problems,
    load_file,
    plain_relations,
    query_columns,
    query_from,
    register_utc,
    tables_read,
)


def export_join(
    source: str | Engine, out_dir: str | Path, *, as_of: datetime, spine: str | Path | None,
    spine_query: str | None, at: str | None, join: Mapping[str, str | Sequence[str]],
    name: str, format: str, force: bool, signing_key: bytes | None, rows_per_file: int,
    wait: float, on_progress: Callable[[Progress], None] | None,
) -> Manifest:
    """The point-in-time join export (called by :func:`temporal.export`)."""
    moment = aware(as_of, what="as_of")
    if (spine is None) == (spine_query is None):
        raise ExportError("a point-in-time join needs exactly one spine: a file (spine=) "
                          "or a query (spine_query=)")
    if not at:
        raise ExportError("name the spine's event-time column (at=)")
    if not join:
        raise ExportError("name at least one table to join (join={table: spine column})")
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if rows_per_file < 1:
        raise ExportError("rows_per_file must be at least 1")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ExportError(f"the output's name {name!r} must be letters, digits, - and _")
    keys: dict[str, list[str]] = {}
    for table, columns in sorted(join.items()):
        chosen = [columns] if isinstance(columns, str) else list(columns)
        if not chosen or not all(isinstance(c, str) and c for c in chosen):
            raise ExportError(f"join {table!r}: name the spine column(s) holding its key")
        keys[table] = chosen
    record: dict[str, Any] = {}
    attachments: tuple[tuple[str, Path], ...] = ()
    if spine is not None:
        path = Path(spine)
        kind = FILE_FORMATS.get(path.suffix.lower())
        if kind is None:
            raise ExportError(f"spine {path}: expected a .csv or .parquet file")
        if not path.is_file():
            raise ExportError(f"spine {path}: no such file")
        if path.resolve().is_relative_to(Path(out_dir).resolve()):
            raise ExportError(f"spine {path} is inside the output folder {out_dir}, which "
                              "the export empties first; keep the spine elsewhere")
        sha, size = file_sha256(path)
        inside = f"spine.{kind}"
        record = {"file": inside, "format": kind, "sha256": sha, "bytes": size}
        attachments = ((inside, path),)
    else:
        record = {"query": spine_query}
    record.update({"at": at, "join": {t: {"spine": c} for t, c in keys.items()}})
    plan = ExportPlan(at=moment, query=None, fmt=format, rows_per_file=rows_per_file,
                      force=force, on_progress=on_progress, spine=record,
                      attachments=attachments, signing_key=signing_key)
    return _run(source, Path(out_dir), plan, name=name, wait=wait)


def rerun_join(source: str | Engine, out: Path, plan: ExportPlan, root: Path, *, name: str,
               wait: float) -> Manifest:
    """The join a manifest describes, again (for ``verify``); ``root`` is its folder."""
    assert plan.spine is not None
    record = json.loads(json.dumps(plan.spine))  # a copy: the run fills in what it finds
    attachments: tuple[tuple[str, Path], ...] = ()
    if "file" in record:
        problems = file_problems(record, root)
        if problems:
            raise ExportError(problems[0])
        attachments = ((record["file"], root / record["file"]),)
    return _run(source, out, replace(plan, spine=record, attachments=attachments), name=name,
                wait=wait)


# -- the join ----------------------------------------------------------------------------


def _run(source: str | Engine, out: Path, plan: ExportPlan, *, name: str, wait: float
         ) -> Manifest:
    record = plan.spine
    assert record is not None
    data = SpineFile(plan.attachments[0][1], record["format"]) if "file" in record else None
    query: str | None = record.get("query")
    loaded: list[SpineColumns] = []  # filled by prepare(), before the snapshot reads

    def prepare(conn: Connection) -> None:
        if data is not None:
            loaded.append(load_file(conn, data))

    def sources(snapshot: _Snapshot) -> list[_Source]:
        conn = snapshot.conn
        if snapshot.guard is not None:
            # SQLite: the sandbox's authorizer checked the spine query as it compiled;
            # the join reads the tables themselves, which the authorizer would refuse.
            # The checked date functions stay until the snapshot closes.
            authorizer.release(conn, snapshot.guard, functions=False)
        if conn.dialect.name == "sqlite":
            register_utc(conn)
        if data is not None:
            columns, from_sql = loaded[0], conn.dialect.identifier_preparer.quote(SPINE_TABLE)
        else:
            assert snapshot.query is not None and query is not None
            columns, from_sql = query_columns(conn, snapshot.query), query_from(conn, query)
            # Recorded: the plain tables the query reads, not every one it was allowed.
            snapshot.query.unversioned = _unversioned(conn, from_sql)
        return [_join_source(conn, plan, record, columns, from_sql, name)]

    return export_sources(source, out, plan, wait=wait, sources=sources,
                          tables=sorted(record["join"]), query=query,
                          unversioned=plain_relations if query is not None else (),
                          prepare=prepare if data is not None else None)


def _join_source(conn: Connection, plan: ExportPlan, record: dict[str, Any],
                 spine: SpineColumns, from_sql: str, name: str) -> _Source:
    dialect = conn.dialect.name
    quote = conn.dialect.identifier_preparer.quote
    at = record["at"]
    if at not in spine.names:
        raise ExportError(f"the spine has no column {at!r} (its columns: "
                          f"{', '.join(spine.names)})")
    s = quote(SPINE_TABLE)
    if dialect == "postgresql":
        kind = spine.type_names[spine.names.index(at)]
        if not kind.startswith("TIMESTAMP"):
            fix = ("cast it to timestamptz in the query" if "query" in record else
                   "write ISO-8601 times like 2026-03-01T12:00:00Z")
            raise ExportError(f"spine column {at!r} is {kind.lower()}, not a time; {fix}")
        time = f"{s}.{quote(at)}"
        if kind == "TIMESTAMP WITHOUT TIME ZONE":  # a time without a zone is UTC
            time = f"({time} AT TIME ZONE 'UTC')"
    else:
        time = f"{UTC_FUNCTION}({s}.{quote(at)})"
    _refuse_late_rows(conn, from_sql, time, at, plan.at)

    schema = inspect(conn).default_schema_name or "main"
    textual = read_as_text(dialect)  # as in an export
    selected = []
    types: list[TypeEngine[Any] | None] = []
    kinds: list[ColumnType] = []
    for s_name, s_type, s_sql in zip(spine.names, spine.types, spine.type_names, strict=True):
        s_kind = (column_type(s_type, conn.dialect) if s_type is not None
                  else ColumnType(s_sql, OTHER))
        as_text = s_kind.encoding in textual
        selected.append(f"CAST({s}.{quote(s_name)} AS TEXT) AS {quote(s_name)}" if as_text
                        else f"{s}.{quote(s_name)} AS {quote(s_name)}")
        types.append(None if as_text else s_type)
        kinds.append(s_kind)
    joins: list[str] = []
    columns = list(spine.names)
    for i, (table_name, entry) in enumerate(sorted(record["join"].items())):
        table = _temporal_table(conn, table_name, schema=schema)
        key = [c.name for c in key_columns(table)]
        by = entry["spine"]
        if len(by) != len(key):
            raise ExportError(f"{table_name} has a {len(key)}-column key ({', '.join(key)}); "
                              f"join names {len(by)} spine column(s) ({', '.join(by)})")
        for column in by:
            if column not in spine.names:
                raise ExportError(f"join {table_name}: the spine has no column {column!r}")
        entry["key"] = key
        alias = quote(f"j{i}")
        every = ", ".join(quote(c.name) for c in table.c)
        hot = f"{quote(schema)}.{quote(table_name)}"
        if reads_archive_apart(conn, table_name):
            versions = (f"(SELECT {every} FROM {hot} UNION ALL SELECT {every} FROM "
                        f"{quote(schema)}.{quote(archive_name(table_name))})")
        else:
            versions = hot  # on PostgreSQL the archive is a child, read with it
        on = [f"{alias}.{quote(k)} = {s}.{quote(c)}" for k, c in zip(key, by, strict=True)]
        on.append(f"{alias}.{quote(CREATED_AT)} <= {time}")
        on.append(f"({alias}.{quote(EXPIRED_AT)} IS NULL OR {alias}.{quote(EXPIRED_AT)} > "
                  f"{time})")
        joins.append(f"LEFT JOIN {versions} AS {alias} ON {' AND '.join(on)}")
        for c in table.c:
            if c.name in (CREATED_AT, EXPIRED_AT):
                continue
            label = f"{table_name}.{c.name}"
            if label in columns:
                raise ExportError(f"the output would have two columns named {label!r}; "
                                  "rename the spine column")
            c_kind = column_type(c.type, conn.dialect)
            value = f"{alias}.{quote(c.name)}"
            if c_kind.encoding in textual:
                # read as text, as an export does: a driver would turn JSON null into
                # NULL and a month into 30 days
                value, processed = f"CAST({value} AS TEXT)", None
            else:
                processed = c.type
            selected.append(f"{value} AS {quote(label)}")
            columns.append(label)
            types.append(processed)
            kinds.append(c_kind)
    inner = f"SELECT {', '.join(selected)} FROM {from_sql} {' '.join(joins)}"
    order = ", ".join(f"x.{quote(c)} NULLS FIRST" for c in spine.names)
    statement = f"SELECT * FROM ({inner}) AS x ORDER BY {order}"
    try:  # plan it now: a spine key that cannot meet a table's key fails here, clearly
        conn.exec_driver_sql(escape(f"EXPLAIN {statement}", dialect), {}).close()
    except exc.DBAPIError as error:
        raise ExportError(f"the join failed: {_first_line(error)}") from None
    processors = [t.result_processor(conn.dialect, None) if t is not None else None
                  for t in types]

    def rows() -> Iterator[Sequence[Any]]:
        try:
            result = conn.exec_driver_sql(escape(statement, dialect), {},
                                          execution_options=_STREAM)
            for row in result:
                yield [v if p is None else p(v) for p, v in zip(processors, row, strict=True)]
        except exc.DBAPIError as error:
            raise ExportError(f"the join failed: {_first_line(error)}") from None

    fast: Callable[[], Iterator[list[bytes]]] | None = None
    if dialect == "postgresql":
        texts = [pgcopy.canonical_sql(f"x.{quote(c)}", k)
                 for c, k in zip(columns, kinds, strict=True)]
        if all(t is not None for t in texts):
            copy = f"SELECT {', '.join(str(t) for t in texts)} FROM ({inner}) AS x ORDER BY {order}"

            def fast() -> Iterator[list[bytes]]:
                return pgcopy.copy_batches(conn, copy, FETCH_ROWS)
    return _Source(name=name, columns=columns, types=kinds, order_by=list(spine.names),
                   rows=rows, fast=fast)


def _refuse_late_rows(conn: Connection, from_sql: str, time: str, at_column: str,
                      as_of: datetime) -> None:
    """Refuse spine rows after ``as_of`` (their features may not be written yet) and
    rows without a readable time."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = (f"SELECT count(*) FILTER (WHERE {time} > %(as_of)s), "
               f"count(*) FILTER (WHERE {time} IS NULL), max({time}) "
               f"FROM {escape(from_sql, dialect)}")
        params: dict[str, Any] = {"as_of": as_of}
    else:
        sql = (f"SELECT coalesce(sum({time} > :as_of), 0), coalesce(sum({time} IS NULL), 0), "
               f"max({time}) FROM {from_sql}")
        params = {"as_of": as_of.astimezone(UTC).strftime(SQLITE_TEXT_TIME)}
    try:
        late, missing, latest = conn.exec_driver_sql(sql, params).one()
    except exc.DBAPIError as error:
        raise ExportError(f"the spine cannot be read: {_first_line(error)}") from None
    if missing:
        raise ExportError(f"{missing} spine row(s) have no time in column {at_column!r} "
                          "(NULL, or not an ISO-8601 time); every example needs one")
    if late:
        if isinstance(latest, str):  # SQLite: the fixed-width UTC text
            latest = datetime.strptime(latest, SQLITE_TEXT_TIME).replace(tzinfo=UTC)
        shown = isoformat(latest)
        raise ExportError(
            f"{late} spine row(s) have {at_column} after the export's as_of "
            f"{isoformat(as_of)} (the latest: {shown}); their features may not be written "
            "yet. Export as of a later moment, or leave those rows out")


def _first_line(error: exc.DBAPIError) -> str:
    return str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__


def _unversioned(conn: Connection, from_sql: str) -> list[str]:
    """Plain (non-temporal) tables a spine query reads: the manifest names them."""
    read = tables_read(conn, from_sql) - {SPINE_TABLE, VIEW}
    schema = inspect(conn).default_schema_name

    def temporal(table: str) -> bool:
        try:
            _temporal_table(conn, table, schema=schema)
        except ExportError:
            return False
        return True

    return sorted(t for t in read if not temporal(t) and not (
        t.endswith(ARCHIVE_SUFFIX) and temporal(t[:-len(ARCHIVE_SUFFIX)])))

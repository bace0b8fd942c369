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

* a **file** spine (CSV or Parquet, read with pyarrow; CSV follows the
  export's own convention: an unquoted empty field is NULL) is loaded into a
  temporary table first; a copy goes into the export folder, and the manifest
  records its sha256, so ``verify`` can re-run the join anywhere;
* a **query** spine reads temporal tables as of ``as_of`` like ``--query``;
  plain tables it reads (the labels) are allowed and recorded as unversioned.

Times without a zone (a CSV's ``2026-03-01 12:00:00``, SQLite text, a
PostgreSQL ``timestamp``) are UTC, as everywhere in ``temporal``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Double,
    Engine,
    LargeBinary,
    MetaData,
    Table,
    Text,
    exc,
    insert,
    inspect,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

from temporal import pgcopy
from temporal.archival import reads_archive_apart
from temporal.catalog import archive_name
from temporal.clock import UTC, aware, isoformat
from temporal.export import (
    _STREAM,
    FORMATS,
    ExportError,
    ExportPlan,
    Progress,
    _first_line,
    _Snapshot,
    _Source,
    _temporal_table,
    export_sources,
)
from temporal.manifest import Manifest, file_sha256
from temporal.model import CREATED_AT, EXPIRED_AT, key_columns
from temporal.types import UTCDateTime

SPINE_TABLE = "temporal_spine"
SPINE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_SQLITE_TEXT_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how UTCDateTime stores instants on SQLite
_UTC_FUNCTION = "temporal_utc"

# PostgreSQL type OIDs of a spine query's columns, for the canonical COPY path.
_PG_TYPES: dict[int, TypeEngine[Any]] = {
    16: Boolean(), 20: BigInteger(), 21: BigInteger(), 23: BigInteger(), 25: Text(),
    1043: Text(), 701: Double(), 1082: Date(), 1114: DateTime(), 1184: UTCDateTime(),
}
_PG_TIMES = (1114, 1184)


def export_join(
    source: str | Engine, out_dir: str | Path, *, as_of: datetime, spine: str | Path | None,
    spine_query: str | None, at: str | None, join: Mapping[str, str | Sequence[str]],
    name: str, format: str, force: bool, rows_per_file: int, wait: float,
    on_progress: Callable[[Progress], None] | None,
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
        kind = SPINE_FORMATS.get(path.suffix.lower())
        if kind is None:
            raise ExportError(f"spine {path}: expected a .csv or .parquet file")
        if not path.is_file():
            raise ExportError(f"spine {path}: no such file")
        sha, size = file_sha256(path)
        inside = f"spine.{kind}"
        record = {"file": inside, "format": kind, "sha256": sha, "bytes": size}
        attachments = ((inside, path),)
    else:
        record = {"query": spine_query}
    record.update({"at": at, "join": {t: {"spine": c} for t, c in keys.items()},
                   "unversioned": []})
    plan = ExportPlan(at=moment, query=None, fmt=format, rows_per_file=rows_per_file,
                      force=force, on_progress=on_progress, spine=record,
                      attachments=attachments)
    return _run(source, Path(out_dir), plan, name=name, wait=wait)


def rerun_join(source: str | Engine, out: Path, plan: ExportPlan, root: Path, *, name: str,
               wait: float) -> Manifest:
    """The join a manifest describes, again (for ``verify``); ``root`` is its folder."""
    assert plan.spine is not None
    record = json.loads(json.dumps(plan.spine))  # a copy: the run fills in what it finds
    attachments: tuple[tuple[str, Path], ...] = ()
    if "file" in record:
        problems = spine_problems(record, root)
        if problems:
            raise ExportError(problems[0])
        attachments = ((record["file"], root / record["file"]),)
    return _run(source, out, replace(plan, spine=record, attachments=attachments), name=name,
                wait=wait)


def spine_problems(record: dict[str, Any], root: Path) -> list[str]:
    """What is wrong with the copy of a file spine in the export folder ``root``."""
    if "file" not in record:
        return []
    inside = str(record["file"])
    path = root / inside
    if path.resolve().parent != root.resolve() or not path.is_file():
        return [f"{inside}: the spine's copy is missing"]
    sha, size = file_sha256(path)
    if size != record.get("bytes") or sha != record.get("sha256"):
        return [f"{inside}: the spine's copy differs from the sha256 its manifest records"]
    return []


# -- the spine ---------------------------------------------------------------------------


@dataclass
class _SpineColumns:
    names: list[str]
    types: list[TypeEngine[Any] | None]
    type_names: list[str]


def _read_file(path: Path, kind: str) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError("a spine file needs pyarrow: pip install 'temporal[parquet]'") from None
    try:
        if kind == "parquet":
            data = pq.read_table(path)
        else:
            options = pacsv.ConvertOptions(strings_can_be_null=True,
                                           quoted_strings_can_be_null=False)
            data = pacsv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, OSError) as error:
        raise ExportError(f"spine {path.name}: cannot read it as {kind} ({error})") from None
    return data


def _arrow_to_sql(name: str, kind: Any) -> TypeEngine[Any]:
    import pyarrow as pa

    if pa.types.is_boolean(kind):
        return Boolean()
    if pa.types.is_integer(kind):
        return BigInteger()
    if pa.types.is_floating(kind):
        return Double()
    if pa.types.is_timestamp(kind):
        return UTCDateTime()  # a CSV time without a zone is UTC, as on the command line
    if pa.types.is_date(kind):
        return Date()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return Text()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return LargeBinary()
    raise ExportError(f"spine column {name!r} has type {kind}, which a spine cannot hold; "
                      "use numbers, text, booleans, dates or times")


def _file_rows(data: Any, types: list[TypeEngine[Any]]) -> Iterator[tuple[Any, ...]]:
    import pyarrow as pa

    columns = []
    for i, kind in enumerate(types):
        array = data.column(i)
        if isinstance(kind, UTCDateTime):
            if array.type.tz is None:
                array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
            try:
                array = array.cast(pa.timestamp("us", tz="UTC"))
            except pa.ArrowInvalid:
                raise ExportError(f"spine column {data.column_names[i]!r} holds times finer "
                                  "than a microsecond") from None
        columns.append(array.to_pylist())
    yield from zip(*columns, strict=True)


def _load_file(conn: Connection, data: Any) -> _SpineColumns:
    """Create the temporary spine table and fill it with the file's rows."""
    names = list(data.column_names)
    types = [_arrow_to_sql(n, data.schema.field(n).type) for n in names]
    table = Table(SPINE_TABLE, MetaData(),
                  *[Column(n, t) for n, t in zip(names, types, strict=True)],
                  prefixes=["TEMPORARY"])
    _check_names(names)
    table.create(conn)
    rows = _file_rows(data, types)
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.driver_connection
        quote = conn.dialect.identifier_preparer.quote
        sql = f"COPY {quote(SPINE_TABLE)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    else:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(dict(zip(names, row, strict=True)))
            if len(batch) == 10_000:
                conn.execute(insert(table), batch)
                batch = []
        if batch:
            conn.execute(insert(table), batch)
    return _SpineColumns(names, list(types),
                         [t.compile(dialect=conn.dialect) for t in types])


def _check_names(names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ExportError(f"the spine has two columns named {n!r}")
        seen.add(n)


def _escape(sql: str, dialect: str) -> str:
    return sql.replace("%", "%%") if dialect == "postgresql" else sql


def _probe_query(conn: Connection, query: str) -> _SpineColumns:
    """The spine query's columns; refuse anything but one statement."""
    dialect = conn.dialect.name
    body = query.strip().rstrip(";").strip()
    if not body:
        raise ExportError("the spine query is empty")
    # A bound parameter makes psycopg use the extended protocol, which refuses a
    # second statement: the query can never close the read-only snapshot.
    probe = f"SELECT * FROM ({body}) AS {SPINE_TABLE} LIMIT "
    try:
        result = conn.exec_driver_sql(
            _escape(probe, dialect) + ("%(none)s" if dialect == "postgresql" else ":none"),
            {"none": 0})
    except exc.DBAPIError as error:
        raise ExportError(f"the spine query failed: {_first_line(error)}") from None
    names = list(result.keys())
    description = result.cursor.description or []
    result.close()
    _check_names(names)
    if dialect == "postgresql":
        codes: list[int] = [d[1] for d in description]  # type: ignore[misc]
        types = [_PG_TYPES.get(code) for code in codes]
        return _SpineColumns(names, types, [_pg_type_name(conn, c) for c in codes])
    return _SpineColumns(names, [None] * len(names), [""] * len(names))


def _pg_type_name(conn: Connection, oid: int) -> str:
    return str(conn.exec_driver_sql("SELECT format_type(%(oid)s, NULL)", {"oid": oid}
                                    ).scalar_one()).upper()


def _tables_read(conn: Connection, from_sql: str) -> set[str]:
    """The tables a spine query reads (to record the plain ones as unversioned).

    This is the seam for the ``--query`` sandbox: it proves the query safe and
    lists its table references; until then the planner (PostgreSQL) or the
    authorizer (SQLite) names what the statement reads.
    """
    if conn.dialect.name == "postgresql":
        plan = conn.exec_driver_sql(_escape(f"EXPLAIN (FORMAT JSON) SELECT * FROM {from_sql}",
                                            "postgresql") + " LIMIT %(none)s", {"none": 0}
                                    ).scalar_one()
        found: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if "Relation Name" in node:
                    found.add(node["Relation Name"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(plan)
        return found
    raw: Any = conn.connection.driver_connection
    read: set[str] = set()

    def authorize(action: int, table: str | None, *_: Any) -> int:
        if action == 20 and table:  # SQLITE_READ
            read.add(table)
        return 0  # SQLITE_OK

    raw.set_authorizer(authorize)
    try:
        raw.execute(f"EXPLAIN SELECT * FROM {from_sql}").fetchall()
    finally:
        raw.set_authorizer(None)
    return read


def _utc_text(value: Any) -> str | None:
    """SQLite: a spine time as the fixed-width UTC text period columns hold (NULL if
    it is not a time)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime(_SQLITE_TEXT_TIME)


# -- the join ----------------------------------------------------------------------------


def _run(source: str | Engine, out: Path, plan: ExportPlan, *, name: str, wait: float
         ) -> Manifest:
    record = plan.spine
    assert record is not None
    data = None
    if "file" in record:
        data = _read_file(plan.attachments[0][1], record["format"])
    loaded: list[_SpineColumns] = []

    def prepare(conn: Connection) -> None:
        if data is not None:
            loaded.append(_load_file(conn, data))

    def sources(snapshot: _Snapshot) -> list[_Source]:
        conn = snapshot.conn
        if conn.dialect.name == "sqlite":
            conn.connection.driver_connection.create_function(  # type: ignore[union-attr]
                _UTC_FUNCTION, 1, _utc_text, deterministic=True)
        quote = conn.dialect.identifier_preparer.quote
        if data is not None:
            spine, from_sql = loaded[0], quote(SPINE_TABLE)
        else:
            spine = _probe_query(conn, record["query"])
            body = record["query"].strip().rstrip(";").strip()
            from_sql = f"({body}) AS {quote(SPINE_TABLE)}"
        return [_join_source(conn, plan, record, spine, from_sql, name)]

    return export_sources(source, out, plan, wait=wait, sources=sources,
                          tables=sorted(record["join"]), shadow=True, prepare=prepare)


def _join_source(conn: Connection, plan: ExportPlan, record: dict[str, Any],
                 spine: _SpineColumns, from_sql: str, name: str) -> _Source:
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
        time = f"{_UTC_FUNCTION}({s}.{quote(at)})"
    _refuse_late_rows(conn, from_sql, time, at, plan.at)

    schema = inspect(conn).default_schema_name or "main"
    selected = [f"{s}.{quote(c)} AS {quote(c)}" for c in spine.names]
    joins: list[str] = []
    columns = list(spine.names)
    types: list[TypeEngine[Any] | None] = list(spine.types)
    type_names = list(spine.type_names)
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
            selected.append(f"{alias}.{quote(c.name)} AS {quote(label)}")
            columns.append(label)
            types.append(c.type)
            type_names.append(c.type.compile(dialect=conn.dialect))
    record["unversioned"] = _unversioned(conn, record, from_sql)
    inner = f"SELECT {', '.join(selected)} FROM {from_sql} {' '.join(joins)}"
    order = ", ".join(f"x.{quote(c)} NULLS FIRST" for c in spine.names)
    statement = f"SELECT * FROM ({inner}) AS x ORDER BY {order}"
    try:  # plan it now: a spine key that cannot meet a table's key fails here, clearly
        conn.exec_driver_sql(_escape(f"EXPLAIN {statement}", dialect), {}).close()
    except exc.DBAPIError as error:
        raise ExportError(f"the join failed: {_first_line(error)}") from None
    processors = [t.result_processor(conn.dialect, None) if t is not None else None
                  for t in types]

    def rows() -> Iterator[Sequence[Any]]:
        try:
            result = conn.exec_driver_sql(_escape(statement, dialect), {},
                                          execution_options=_STREAM)
            for row in result:
                yield [v if p is None else p(v) for p, v in zip(processors, row, strict=True)]
        except exc.DBAPIError as error:
            raise ExportError(f"the join failed: {_first_line(error)}") from None

    copy = None
    if dialect == "postgresql" and all(t is not None for t in types):
        texts = [pgcopy.canonical_sql(Column(c, t.impl if isinstance(t, TypeDecorator) else t),
                                      quote) for c, t in zip(columns, types, strict=True)]
        if all(t is not None for t in texts):
            copy = f"SELECT {', '.join(str(t) for t in texts)} FROM ({inner}) AS x ORDER BY {order}"
    return _Source(name=name, columns=columns, types=type_names, order_by=list(spine.names),
                   rows=rows, copy=copy)


def _refuse_late_rows(conn: Connection, from_sql: str, time: str, at_column: str,
                      as_of: datetime) -> None:
    """Refuse spine rows after ``as_of`` (their features may not be written yet) and
    rows without a readable time."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = (f"SELECT count(*) FILTER (WHERE {time} > %(as_of)s), "
               f"count(*) FILTER (WHERE {time} IS NULL), max({time}) "
               f"FROM {_escape(from_sql, dialect)}")
        params: dict[str, Any] = {"as_of": as_of}
    else:
        sql = (f"SELECT coalesce(sum({time} > :as_of), 0), coalesce(sum({time} IS NULL), 0), "
               f"max({time}) FROM {from_sql}")
        params = {"as_of": as_of.astimezone(UTC).strftime(_SQLITE_TEXT_TIME)}
    try:
        late, missing, latest = conn.exec_driver_sql(sql, params).one()
    except exc.DBAPIError as error:
        raise ExportError(f"the spine cannot be read: {_first_line(error)}") from None
    if missing:
        raise ExportError(f"{missing} spine row(s) have no time in column {at_column!r} "
                          "(NULL, or not an ISO-8601 time); every example needs one")
    if late:
        shown = latest if isinstance(latest, str) else isoformat(latest)
        raise ExportError(
            f"{late} spine row(s) have {at_column} after the export's as_of "
            f"{isoformat(as_of)} (the latest: {shown}); their features may not be written "
            "yet. Export as of a later moment, or leave those rows out")


def _unversioned(conn: Connection, record: dict[str, Any], from_sql: str) -> list[str]:
    """Plain (non-temporal) tables a spine query reads: the manifest names them."""
    if "query" not in record:
        return []
    read = _tables_read(conn, from_sql) - {SPINE_TABLE}
    schema = inspect(conn).default_schema_name
    plain = []
    for table in sorted(read):
        try:
            _temporal_table(conn, table, schema=schema)
        except ExportError:
            if not table.endswith("_archive"):
                plain.append(table)
    return plain

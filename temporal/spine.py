"""The spine of a point-in-time join: label events, from a file or a query.

A spine is a relation of rows with an entity key, an event time and any
labels. :mod:`temporal.pitjoin` joins it to temporal tables; this module
makes it readable by the database in the export's snapshot and says what it
is:

* a **file** (CSV or Parquet) is read with pyarrow a batch at a time (CSV as
  the exports write it: an unquoted empty field is NULL, a quoted one the
  empty string; column types are inferred from the first rows, as pyarrow
  does) into a temporary table, ``temporal_spine``, typed from the file;
* a **query** goes through the ``--query`` sandbox (:mod:`temporal.sandbox`):
  one SELECT proven by a parser, sent through the extended protocol, every
  object it reaches checked, temporal tables seen as of the export's moment.
  Unlike ``--query``, it may read any plain table (the labels are the user's
  input): the sandbox is told they are all unversioned, and
  :func:`tables_read` lists those it actually reads, for the manifest.

On SQLite, where times are text, spine times are compared through
``temporal_utc()``, a function registered on the connection that turns any
ISO-8601 text into the fixed-width UTC text the period columns hold (a time
without a zone is UTC).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
    LargeBinary,
    MetaData,
    Table,
    Text,
    insert,
    inspect,
)
from sqlalchemy.types import TypeEngine

from temporal.catalog import ARCHIVE_SUFFIX
from temporal.clock import UTC
from temporal.errors import ExportError
from temporal.manifest import file_sha256
from temporal.sandbox import VIEW, Sandboxed, statement_text
from temporal.types import UTCDateTime

SPINE_TABLE = "temporal_spine"
FILE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SQLITE_TEXT_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how UTCDateTime stores instants on SQLite
UTC_FUNCTION = "temporal_utc"
_LOAD_ROWS = 10_000

# PostgreSQL type OIDs of a spine query's columns, for the canonical COPY path.
_PG_TYPES: dict[int, TypeEngine[Any]] = {
    16: Boolean(), 20: BigInteger(), 21: BigInteger(), 23: BigInteger(), 25: Text(),
    1043: Text(), 701: Double(), 1082: Date(), 1114: DateTime(),
    1184: DateTime(timezone=True),
}


@dataclass
class SpineColumns:
    """The spine's column names, their SQL types where known, and the types' names."""

    names: list[str]
    types: list[TypeEngine[Any] | None]
    type_names: list[str]


def file_problems(record: dict[str, Any], root: Path) -> list[str]:
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


# -- files ------------------------------------------------------------------------------


class SpineFile:
    """A CSV or Parquet spine, read a batch at a time."""

    def __init__(self, path: Path, kind: str) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError("a spine file needs pyarrow: pip install 'temporal[parquet]'"
                              ) from None
        self.path, self.kind = path, kind
        self.schema: Any = self._open()[0]

    def _open(self) -> tuple[Any, Iterator[Any]]:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        try:
            if self.kind == "parquet":
                data = pq.ParquetFile(self.path)
                return data.schema_arrow, data.iter_batches(batch_size=_LOAD_ROWS)
            options = pacsv.ConvertOptions(strings_can_be_null=True,
                                           quoted_strings_can_be_null=False)
            reader = pacsv.open_csv(self.path, convert_options=options)
            return reader.schema, iter(reader)
        except (pa.ArrowInvalid, OSError) as error:
            raise ExportError(f"spine {self.path.name}: cannot read it as {self.kind} "
                              f"({error})") from None

    def batches(self) -> Iterator[Any]:
        import pyarrow as pa

        batches = self._open()[1]
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError) as error:
                raise ExportError(f"spine {self.path.name}: {error} (column types come "
                                  "from the first rows)") from None
            yield batch


def _arrow_to_sql(name: str, kind: Any) -> TypeEngine[Any]:
    import pyarrow as pa

    if pa.types.is_boolean(kind):
        return Boolean()
    if pa.types.is_integer(kind):
        return BigInteger()
    if pa.types.is_floating(kind):
        return Double()
    if pa.types.is_timestamp(kind):
        return UTCDateTime()  # a time without a zone is UTC, as on the command line
    if pa.types.is_date(kind):
        return Date()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return Text()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return LargeBinary()
    raise ExportError(f"spine column {name!r} has type {kind}, which a spine cannot hold; "
                      "use numbers, text, booleans, dates or times")


def _normalized(batch: Any, types: list[TypeEngine[Any]]) -> Any:
    """The batch with every time in UTC microseconds (a time without a zone is UTC)."""
    import pyarrow as pa

    arrays = []
    for i, kind in enumerate(types):
        array = batch.column(i)
        if isinstance(kind, UTCDateTime):
            if array.type.tz is None:
                array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
            try:
                array = array.cast(pa.timestamp("us", tz="UTC"))
            except pa.ArrowInvalid:
                raise ExportError(f"spine column {batch.schema.names[i]!r} holds times finer "
                                  "than a microsecond") from None
        arrays.append(array)
    return pa.record_batch(arrays, names=batch.schema.names)


def _rows(batch: Any) -> Iterator[tuple[Any, ...]]:
    return zip(*[column.to_pylist() for column in batch.columns], strict=True)


def _csv_lines(batch: Any) -> bytes:
    """A batch as CSV lines PostgreSQL's COPY reads: every value quoted, NULL empty."""
    import io

    import pyarrow.csv as pacsv

    buffer = io.BytesIO()
    pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False,
                                                      quoting_style="all_valid"))
    return buffer.getvalue()


def load_file(conn: Connection, spine: SpineFile) -> SpineColumns:
    """Create the temporary spine table and fill it with the file's rows."""
    names = list(spine.schema.names)
    check_names(names)
    types = [_arrow_to_sql(n, spine.schema.field(n).type) for n in names]
    table = Table(SPINE_TABLE, MetaData(),
                  *[Column(n, t) for n, t in zip(names, types, strict=True)],
                  prefixes=["TEMPORARY"])
    table.create(conn)
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.driver_connection
        quote = conn.dialect.identifier_preparer.quote
        # Binary values have no CSV text pyarrow and COPY agree on: those go row by row.
        as_csv = not any(isinstance(t, LargeBinary) for t in types)
        sql = (f"COPY {quote(SPINE_TABLE)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
               + (" WITH (FORMAT csv)" if as_csv else ""))
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for batch in spine.batches():
                fixed = _normalized(batch, types)
                if as_csv:
                    copy.write(_csv_lines(fixed))
                else:
                    for row in _rows(fixed):
                        copy.write_row(row)
        conn.exec_driver_sql(f"ANALYZE {quote(SPINE_TABLE)}")  # the planner's row counts
    else:
        for batch in spine.batches():
            rows = [dict(zip(names, row, strict=True)) for row in _rows(_normalized(batch, types))]
            if rows:
                conn.execute(insert(table), rows)
    return SpineColumns(names, list(types), [t.compile(dialect=conn.dialect) for t in types])


def check_names(names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ExportError(f"the spine has two columns named {n!r}")
        seen.add(n)


# -- queries ----------------------------------------------------------------------------


def escape(sql: str, dialect: str) -> str:
    """SQL text for the driver when parameters are bound (psycopg's ``%`` placeholders)."""
    return sql.replace("%", "%%") if dialect == "postgresql" else sql


def query_columns(conn: Connection, checked: Sandboxed) -> SpineColumns:
    """The columns of a spine query the sandbox checked, with their types where known."""
    if conn.dialect.name != "postgresql":
        return SpineColumns(list(checked.columns), [None] * len(checked.columns),
                            [""] * len(checked.columns))
    rows = conn.exec_driver_sql(
        "SELECT attname, atttypid::int, upper(format_type(atttypid, atttypmod)) "
        "FROM pg_attribute WHERE attrelid = %(view)s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", {"view": f"pg_temp.{VIEW}"}).all()
    names = [r[0] for r in rows]
    check_names(names)
    return SpineColumns(names, [_PG_TYPES.get(r[1]) for r in rows], [r[2] for r in rows])


def query_from(conn: Connection, query: str) -> str:
    """The FROM item that reads a checked spine query, named ``temporal_spine``."""
    quote = conn.dialect.identifier_preparer.quote
    if conn.dialect.name == "postgresql":  # the view the sandbox made and checked
        return f"pg_temp.{VIEW} AS {quote(SPINE_TABLE)}"
    # SQLite: the text the sandbox checked, on lines of its own (a trailing comment)
    return f"(\n{statement_text(query)}\n) AS {quote(SPINE_TABLE)}"


def plain_relations(conn: Connection, shadows: dict[str, Table]) -> list[str]:
    """Every plain table and view a spine query may read (the sandbox is told they are
    unversioned; the manifest lists those the query actually reads)."""
    inspector = inspect(conn)
    names = [*inspector.get_table_names(), *inspector.get_view_names()]
    return sorted(n for n in names if n not in shadows and not (
        n.endswith(ARCHIVE_SUFFIX) and n[:-len(ARCHIVE_SUFFIX)] in shadows))


def tables_read(conn: Connection, from_sql: str) -> set[str]:
    """The tables a spine query reads (to record the plain ones as unversioned).

    This is the seam for the ``--query`` sandbox, which will list a query's
    table references from its parse; until then the planner (PostgreSQL) or the
    authorizer (SQLite) names what the statement reads.
    """
    if conn.dialect.name == "postgresql":
        plan = conn.exec_driver_sql(escape(f"EXPLAIN (FORMAT JSON) SELECT * FROM {from_sql}",
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


# -- times on SQLite ---------------------------------------------------------------------


def utc_text(value: Any) -> str | None:
    """A spine time as the fixed-width UTC text SQLite period columns hold (None if it
    is not an ISO-8601 time)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime(SQLITE_TEXT_TIME)


def register_utc(conn: Connection) -> None:
    """SQLite: make ``temporal_utc()`` available on this connection."""
    raw: Any = conn.connection.driver_connection
    raw.create_function(UTC_FUNCTION, 1, utc_text, deterministic=True)

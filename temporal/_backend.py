"""What differs between PostgreSQL and SQLite, in one place.

Two questions decide every versioned write:

* **When is "now" for this transaction?** On PostgreSQL it is the database's
  ``clock_timestamp()``, read only after the transaction holds its transaction
  id. That ordering is what lets an export wait for every transaction that
  could still commit a version stamped at or before its ``as_of``: such a
  transaction is visible as "in progress" before its stamp exists. A
  transaction-scoped advisory lock on the stamp keeps it unique among the
  transactions in flight, so "a row stamped with my stamp" can only be mine. On SQLite
  the library keeps a one-row clock table and advances it under the write lock
  (``max(last + 1µs, now)``), so stamps are unique and monotonic in commit order.

* **Was this row written by the current transaction?** A version this
  transaction already created is changed in place (one transaction = at most one
  version per key). On PostgreSQL that is a row whose ``xmin`` is still in
  progress: the only in-progress rows a transaction can see are its own,
  including those written inside savepoints. On SQLite a stamp belongs to one
  transaction only, so ``created_at = stamp`` says it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Table,
    Text,
    case,
    cast,
    column,
    false,
    func,
    literal,
    text,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import UserDefinedType

from temporal import clock
from temporal.errors import UnsupportedError

_EPOCH = datetime(1970, 1, 1, tzinfo=clock.UTC)

SQLITE_CLOCK_TABLE = "temporal_clock"
#: The clock table's marker while a library transaction holds the stamp (raw statements
#: in that transaction share it, see ``triggers.py``), and during maintenance.
LIBRARY_MARK = -1
MAINTENANCE_MARK = -2


def dialect_name(conn: Connection) -> str:
    name = conn.dialect.name
    if name not in ("postgresql", "sqlite"):
        raise UnsupportedError(
            f"temporal supports PostgreSQL and SQLite; this connection is {name!r}"
        )
    return name


def read_stamp(conn: Connection) -> datetime:
    """Take this transaction's timestamp (call once per transaction).

    A raw write earlier in the same transaction may have taken it already (the
    triggers, ``triggers.py``): then it is that one.
    """
    if dialect_name(conn) == "postgresql":
        for _ in range(1000):
            micros, unique = conn.execute(_PG_STAMP).one()
            if unique:
                return _EPOCH + timedelta(microseconds=micros)
        raise UnsupportedError("could not take a unique transaction timestamp")
    micros = _micros(clock.now())
    if not conn.info.get("temporal.clock_table"):
        ensure_sqlite_clock(conn)
        conn.info["temporal.clock_table"] = True
    stamp = conn.exec_driver_sql(
        f"UPDATE {SQLITE_CLOCK_TABLE} SET stamp = max(stamp + 1, ?), marker = {LIBRARY_MARK} "
        "WHERE id = 1 RETURNING stamp",
        (micros,),
    ).scalar_one()
    return _EPOCH + timedelta(microseconds=stamp)


def reassert_stamp(conn: Connection, stamp: datetime) -> datetime:
    """After a savepoint rollback: make the database hold the transaction's stamp
    again (PostgreSQL's ``temporal.stamp`` setting, SQLite's clock row), which the
    rollback takes along if the savepoint took the stamp.

    Then no version with that stamp survived (everything written after it was taken
    went with the savepoint), so if a raw write has taken another one since, the
    transaction adopts it. Returns the stamp to use.
    """
    if dialect_name(conn) == "postgresql":
        value = conn.execute(_PG_REASSERT, {"micros": str(_micros(stamp))}).scalar_one()
        return _EPOCH + timedelta(microseconds=int(value))
    value = conn.exec_driver_sql(
        f"UPDATE {SQLITE_CLOCK_TABLE} SET stamp = CASE WHEN marker = {LIBRARY_MARK} THEN stamp "
        f"ELSE max(stamp + 1, ?) END, marker = {LIBRARY_MARK} WHERE id = 1 RETURNING stamp",
        (_micros(stamp),),
    ).scalar_one()
    return _EPOCH + timedelta(microseconds=value)


def ensure_sqlite_clock(conn: Connection) -> None:
    """SQLite: the clock table with its marker columns (older databases get them added)."""
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {SQLITE_CLOCK_TABLE} (id INTEGER PRIMARY KEY "
        "CHECK (id = 1), stamp INTEGER NOT NULL, marker REAL, saved REAL)")
    have = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({SQLITE_CLOCK_TABLE})")}
    for name in ("marker", "saved"):
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE {SQLITE_CLOCK_TABLE} ADD COLUMN {name} REAL")
    conn.exec_driver_sql(f"INSERT OR IGNORE INTO {SQLITE_CLOCK_TABLE} (id, stamp) VALUES (1, 0)")


@contextmanager
def library_statements(conn: Connection, dialect: str) -> Iterator[None]:
    """SQLite: run the library's own versioned statements past the raw writers' triggers.

    Those triggers' ``WHEN`` clauses let the library's statement shapes through
    anyway, but SQLite evaluates them for every row, reading and formatting the
    stamp several times each: for a 5,000-row flush that was more than the
    statements' own work. While the library's transaction holds the stamp
    (``LIBRARY_MARK``), the marker becomes ``MAINTENANCE_MARK`` for the
    statements inside and the triggers skip at their first test. The overlap
    guard (``guard.py``) does not read the marker and checks every row as before.
    No other writer can run in between (SQLite serialises writers, and the
    change is this transaction's own); a rolled-back savepoint or transaction
    takes the change along. Elsewhere (PostgreSQL, or inside maintenance) nothing
    changes.
    """
    if dialect != "sqlite":
        yield
        return
    switched = conn.exec_driver_sql(
        f"UPDATE {SQLITE_CLOCK_TABLE} SET marker = {MAINTENANCE_MARK} "
        f"WHERE id = 1 AND marker = {LIBRARY_MARK}").rowcount == 1

    def restore() -> None:
        conn.exec_driver_sql(f"UPDATE {SQLITE_CLOCK_TABLE} SET marker = {LIBRARY_MARK} "
                             f"WHERE id = 1 AND marker = {MAINTENANCE_MARK}")

    try:
        yield
    except BaseException:
        if switched and not conn.invalidated:
            # The rollback that must follow a failed write takes the mark along
            # anyway; restoring it is tried, and the write's own error is the one raised.
            with suppress(Exception):
                restore()
        raise
    if switched:
        restore()  # never left behind: a commit with the mark would let raw writers by


def release_sqlite_stamp(dbapi_connection: Any) -> None:
    """SQLite, just before a library transaction commits: raw statements after it get
    stamps of their own again."""
    dbapi_connection.execute(f"UPDATE {SQLITE_CLOCK_TABLE} SET marker = NULL "
                             f"WHERE id = 1 AND marker = {LIBRARY_MARK}")


# The stamp a raw write took earlier in this transaction (the setting holds its
# microseconds since the epoch); else the xid first, then the clock, and a
# transaction-scoped advisory lock on the stamp's microsecond, so no two
# transactions in flight share a stamp (a clash just reads the clock again).
# The triggers' temporal_stamp() does the same in PL/pgSQL.
_PG_STAMP = text(
    "WITH prior AS MATERIALIZED (SELECT nullif(current_setting('temporal.stamp', true), '')"
    "::bigint AS us), "
    "xact AS MATERIALIZED (SELECT pg_current_xact_id() AS xid), "
    "stamp AS MATERIALIZED (SELECT clock_timestamp() AS t FROM xact, prior "
    "WHERE prior.us IS NULL), "
    "taken AS MATERIALIZED (SELECT floor(extract(epoch FROM t) * 1000000)::bigint AS us "
    "FROM stamp), "
    "locked AS MATERIALIZED (SELECT us, pg_try_advisory_xact_lock(1952804208, "
    "(us % 2147483647)::integer) AS ok FROM taken) "
    # Microseconds, not a timestamptz: the driver parses a timestamptz only under
    # DateStyle ISO, and a client may have set another.
    "SELECT us, true FROM prior WHERE us IS NOT NULL "
    "UNION ALL SELECT us, CASE WHEN ok THEN "
    "set_config('temporal.stamp', us::text, true) IS NOT NULL "
    "ELSE false END FROM locked"
)
_PG_REASSERT = text(
    "SELECT CASE WHEN coalesce(current_setting('temporal.stamp', true), '') = '' "
    "THEN set_config('temporal.stamp', :micros, true) "
    "ELSE current_setting('temporal.stamp', true) END"
)


def hold_sqlite_write_lock(conn: Connection, wait: float) -> None:
    """SQLite: take the write lock in this transaction (waiting up to ``wait`` s).

    Every writer holds that lock from its stamp to its commit, so once we have
    it no transaction with an earlier stamp is still open.
    """
    conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(wait * 1000)}")
    ensure_sqlite_clock(conn)
    conn.exec_driver_sql(f"UPDATE {SQLITE_CLOCK_TABLE} SET stamp = stamp WHERE id = 1")


def database_now(conn: Connection) -> datetime:
    """The database's idea of now (PostgreSQL), or the library clock (SQLite)."""
    if dialect_name(conn) == "postgresql":  # in microseconds, whatever the DateStyle
        micros = conn.execute(text("SELECT floor(extract(epoch FROM clock_timestamp()) "
                                   "* 1000000)::bigint")).scalar_one()
        return _EPOCH + timedelta(microseconds=micros)
    return clock.now()


def valid_at_text(dialect: str, at: datetime) -> str:
    """SQL text: a version valid at ``at``, for statements that cannot bind parameters
    (views, COPY). The moment is rendered here from a datetime, never from input."""
    if dialect == "postgresql":
        moment = f"'{clock.isoformat(at)}'::timestamptz"
    else:  # the fixed-width UTC text UTCDateTime stores
        moment = "'" + clock.aware(at).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
    return f"created_at <= {moment} AND (expired_at IS NULL OR expired_at > {moment})"


def written_here(table: Table | Any, stamp: datetime, dialect: str) -> ColumnElement[bool]:
    """SQL: this row is a version the current transaction created.

    ``table`` may be a Table or an alias of one. Only rows with
    ``created_at = stamp`` can qualify, so the (PostgreSQL) status lookup runs
    for a transaction's own handful of rows, never for history.
    """
    same_stamp = table.c.created_at == stamp
    if dialect != "postgresql":
        return same_stamp
    xmin: Any = column("xmin")
    xmin.table = table
    # xmin is a 32-bit xid. Widen it to an xid8 next to this transaction's own
    # (its subtransactions sit just above it, other recent ones just below).
    ref = cast(cast(func.pg_current_xact_id(), Text), BigInteger)
    low = cast(cast(xmin, Text), BigInteger)
    full = ref + (low - ref % 4294967296 + 3 * 2147483648) % 4294967296 - 2147483648
    status = func.pg_xact_status(cast(cast(full, Text), _XID8))
    return case((same_stamp, status == literal("in progress")), else_=false())


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


class _XID8Type(UserDefinedType[Any]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


_XID8 = _XID8Type()

"""The database's own guard over history: no two versions of a key valid at once.

The partial unique index ``WHERE expired_at IS NULL`` (see ``model.py``) only
refuses two *current* rows. History can still be corrupted without one: a
transaction that took its stamp early re-inserts a key that a younger
transaction deleted and committed meanwhile, and the two periods overlap. So
every temporal table also gets a guard that the database enforces against
every writer, the library included:

* **PostgreSQL**: statement-level triggers ``<table>_no_overlap_insert`` /
  ``_update`` (``AFTER ... REFERENCING NEW TABLE``) run one set-based probe
  over the rows each statement wrote and raise ``exclusion_violation``
  (SQLSTATE 23P01) on constraint ``<table>_no_overlap`` for a version that
  overlaps another version of its key; ``<table>_period``,
  ``CHECK (expired_at IS NULL OR expired_at > created_at)``, refuses empty and
  negative periods. The probe runs after the statement, with a snapshot that
  sees every commit before it (READ COMMITTED; under REPEATABLE READ the key's
  old current version is still in view and overlaps, so it refuses too). A
  library writer cannot slip past it concurrently: a version only closes under
  the row lock of its UPDATE, and a new current version waits at the unique
  current-row index for any transaction still touching the key. Two raw
  writers inserting overlapping *closed* periods of one key in two concurrent
  transactions could; an exclusion constraint would refuse even that, but
  ``bench/bench_guard.py`` measured it at 3-5x the cost of the whole bulk
  statement (every expire and insert maintains a GiST index over all of
  history), against +40-90% for the trigger.
* **SQLite**: ``BEFORE INSERT`` and ``BEFORE UPDATE OF created_at, expired_at``
  triggers ``<table>_no_overlap_insert`` / ``_update`` raise an error for a
  negative period and for a version that overlaps another version of its key.
  SQLite serialises writers, so the check cannot race. Empty periods
  ``[t, t)`` overlap nothing: the set-based bulk update uses them for an
  instant, as placeholders, inside one statement sequence.

Each check runs against the latest version of the key that starts before the new
version ends, so it costs one index probe however long the history is (earlier
versions end before that one starts, since the guard held when they were
written; :func:`overlaps` verifies exactly that for tables that had no guard).

:func:`install` is idempotent and runs when a temporal table is created and on
``temporal db upgrade``; :func:`overlaps` reports history that is already
corrupt, which :func:`install` refuses to paper over (:class:`OverlapError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, inspect, text

from temporal.errors import TemporalError

#: Suffix of the PostgreSQL exclusion constraint and of the SQLite triggers.
NO_OVERLAP = "_no_overlap"
PERIOD = "_period"
#: What the SQLite triggers' errors start with.
SQLITE_MESSAGE = "temporal guard"
_REPORTED = 10  # overlapping pairs named in an OverlapError, per table


class OverlapError(TemporalError):
    """A table's history already holds two versions of one key valid at once."""


@dataclass(frozen=True)
class Overlap:
    """Two versions of one key whose periods overlap (or one with a negative period)."""

    table: str
    key: tuple[Any, ...]
    created_at: Any  # datetimes on PostgreSQL, the stored UTC text on SQLite
    expired_at: Any
    next_created_at: Any  # the overlapping version's start (None: negative period)

    def describe(self) -> str:
        key = repr(self.key[0]) if len(self.key) == 1 else repr(self.key)
        end = "open" if self.expired_at is None else str(self.expired_at)
        if self.next_created_at is None:
            return f"{self.table} {key}: version [{self.created_at}, {end}) ends before it starts"
        return (f"{self.table} {key}: version [{self.created_at}, {end}) is still valid when "
                f"the next one starts at {self.next_created_at}")


def constraint_name(table: str) -> str:
    return table + NO_OVERLAP


def installed(conn: Connection, table: str) -> bool:
    if conn.dialect.name == "postgresql":
        return conn.execute(
            text("SELECT 1 FROM pg_trigger WHERE tgname = :name AND tgrelid = "
                 "to_regclass(:table)"),
            {"name": constraint_name(table) + "_insert", "table": _quote(conn, table)},
        ).first() is not None
    return conn.execute(
        text("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = :name"),
        {"name": constraint_name(table) + "_insert"},
    ).first() is not None


def install(conn: Connection, table: str, key: Sequence[str]) -> None:
    """Give ``table`` its guard (nothing if it has one); OverlapError if history is corrupt."""
    if installed(conn, table):
        return
    found = overlaps(conn, table, key)
    if found:
        raise OverlapError(describe(found))
    if conn.dialect.name == "postgresql":
        _install_postgresql(conn, table, key)
    else:
        _install_sqlite(conn, table, key)


def remove(conn: Connection, table: str) -> None:
    """Drop ``table``'s guard (for ``make_plain`` and the catalog's downgrade)."""
    name = constraint_name(table)
    if conn.dialect.name == "postgresql":
        if inspect(conn).has_table(table):
            quoted = _quote(conn, table)
            for suffix in ("_insert", "_update"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_quote(conn, name + suffix)} "
                                     f"ON {quoted}")
            conn.exec_driver_sql(f"ALTER TABLE {quoted} DROP CONSTRAINT IF EXISTS "
                                 f"{_quote(conn, table + PERIOD)}")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_quote(conn, name)}()")
        return
    for suffix in ("_insert", "_update"):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_quote(conn, name + suffix)}")


def _install_postgresql(conn: Connection, table: str, key: Sequence[str]) -> None:
    quoted = _quote(conn, table)
    name = constraint_name(table)
    same_key = " AND ".join(f"o.{_quote(conn, k)} = n.{_quote(conn, k)}" for k in key)
    shown = ", ".join(f"n.{_quote(conn, k)}::text" for k in key)
    literal = name.replace("'", "''")
    conn.exec_driver_sql(
        f"ALTER TABLE {quoted} ADD CONSTRAINT {_quote(conn, table + PERIOD)} "
        "CHECK (expired_at IS NULL OR expired_at > created_at)"
    )
    # One set-based probe per statement over the rows it wrote (a transition table):
    # the latest other version of each key starting before the new one ends.
    conn.exec_driver_sql(f"""
CREATE FUNCTION {_quote(conn, name)}() RETURNS trigger LANGUAGE plpgsql AS $guard$
DECLARE
    culprit text;
BEGIN
    SELECT concat_ws(', ', {shown}) || ': [' || n.created_at || ', ' ||
           coalesce(n.expired_at::text, 'open') || ') overlaps the version ending ' ||
           coalesce(l.expired_at::text, 'never')
      INTO culprit
      FROM temporal_written AS n CROSS JOIN LATERAL (
          SELECT o.expired_at FROM ONLY {quoted} AS o
           WHERE {same_key} AND o.created_at <> n.created_at
             AND o.created_at < coalesce(n.expired_at, 'infinity')
           ORDER BY o.created_at DESC LIMIT 1) AS l
     WHERE n.expired_at IS DISTINCT FROM n.created_at
       AND coalesce(l.expired_at, 'infinity') > n.created_at
     LIMIT 1;
    IF culprit IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'exclusion_violation', CONSTRAINT = '{literal}',
              MESSAGE = 'two versions of one key of ' || TG_TABLE_NAME ||
                        ' would be valid at the same moment',
              DETAIL = 'Key ' || culprit || '.';
    END IF;
    RETURN NULL;
END
$guard$""")
    for event, suffix in (("INSERT", "_insert"), ("UPDATE", "_update")):
        conn.exec_driver_sql(
            f"CREATE TRIGGER {_quote(conn, name + suffix)} AFTER {event} ON {quoted} "
            "REFERENCING NEW TABLE AS temporal_written FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {_quote(conn, name)}()"
        )


def _install_sqlite(conn: Connection, table: str, key: Sequence[str]) -> None:
    quoted = _quote(conn, table)
    shown = table.replace("'", "''")  # inside a string literal of the trigger
    same_key = " AND ".join(f"o.{_quote(conn, k)} = NEW.{_quote(conn, k)}" for k in key)

    def body(exclude_self: str) -> str:
        # The latest other non-empty version of the key starting before the new
        # one ends; earlier versions end before it starts (the guard held then).
        latest = (
            f"SELECT o.expired_at FROM {quoted} AS o WHERE {same_key}{exclude_self} "
            "AND (NEW.expired_at IS NULL OR o.created_at < NEW.expired_at) "
            "AND (o.expired_at IS NULL OR o.expired_at > o.created_at) "
            "ORDER BY o.created_at DESC LIMIT 1"
        )
        return (
            f"SELECT RAISE(ABORT, '{SQLITE_MESSAGE}: {shown}: a version cannot end before "
            "it starts') WHERE NEW.expired_at < NEW.created_at; "
            f"SELECT CASE WHEN (NEW.expired_at IS NULL OR NEW.expired_at > NEW.created_at) "
            f"AND EXISTS (SELECT 1 FROM ({latest}) AS l WHERE l.expired_at IS NULL "
            "OR l.expired_at > NEW.created_at) "
            f"THEN RAISE(ABORT, '{SQLITE_MESSAGE}: {shown}: two versions of one key would "
            "be valid at the same moment') END; "
        )

    name = constraint_name(table)
    conn.exec_driver_sql(
        f"CREATE TRIGGER {_quote(conn, name + '_insert')} BEFORE INSERT ON {quoted} "
        f"BEGIN {body('')}END"
    )
    conn.exec_driver_sql(
        f"CREATE TRIGGER {_quote(conn, name + '_update')} BEFORE UPDATE OF created_at, "
        f"expired_at ON {quoted} BEGIN {body(' AND o.rowid <> OLD.rowid')}END"
    )


# -- reporting corrupt history --------------------------------------------------------


def overlaps(conn: Connection, table: str, key: Sequence[str],
             limit: int = _REPORTED) -> list[Overlap]:
    """Versions of one key that overlap the next one, and negative periods (first ``limit``).

    Reads the archive too (on PostgreSQL through inheritance, on SQLite by name).
    """
    keys = ", ".join(_quote(conn, k) for k in key)
    source = _quote(conn, table)
    from temporal import catalog  # the catalog registers tables through this module

    if conn.dialect.name == "sqlite" and catalog.has_archive(conn, table):
        archive = _quote(conn, catalog.archive_name(table))
        source = (f"(SELECT {keys}, created_at, expired_at FROM {source} UNION ALL "
                  f"SELECT {keys}, created_at, expired_at FROM {archive})")
    rows = conn.exec_driver_sql(
        f"SELECT {keys}, created_at, expired_at, next_created_at FROM ("
        f"SELECT {keys}, created_at, expired_at, lead(created_at) OVER "
        f"(PARTITION BY {keys} ORDER BY created_at) AS next_created_at FROM {source} AS v "
        "WHERE expired_at IS NULL OR expired_at <> created_at) AS w "
        "WHERE expired_at < created_at OR (next_created_at IS NOT NULL AND "
        "(expired_at IS NULL OR expired_at > next_created_at)) "
        f"ORDER BY {keys}, created_at LIMIT {int(limit)}"
    ).all()
    n = len(key)
    return [Overlap(table, tuple(r[:n]), r[n], r[n + 1],
                    None if r[n + 1] is not None and r[n + 1] < r[n] else r[n + 2])
            for r in rows]


def describe(found: list[Overlap]) -> str:
    tables = sorted({o.table for o in found})
    lines = "; ".join(o.describe() for o in found)
    return (f"history of {', '.join(tables)} already holds versions of one key valid at the "
            f"same moment, so the database cannot guard it: {lines}. Fix those rows (each "
            "version must expire when the next one starts), then run `temporal db upgrade` "
            "again")


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)

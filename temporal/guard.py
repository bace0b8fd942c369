"""The database's own guard over history: no two versions of a key valid at once.

The partial unique index ``WHERE expired_at IS NULL`` (see ``model.py``) only
refuses two *current* rows. History can still be corrupted without one: a
transaction that took its stamp early re-inserts a key that a younger
transaction deleted and committed meanwhile, and the two periods overlap. So
every temporal table also gets a guard that the database enforces against
every writer, the library included:

* **PostgreSQL**: the statement-level trigger ``<table>_no_overlap_insert``
  (``AFTER INSERT ... REFERENCING NEW TABLE``) runs one set-based probe over the
  rows each statement inserted, and the row-level ``<table>_no_overlap_update``
  probes an updated row, both raising ``exclusion_violation`` (SQLSTATE 23P01) on
  constraint ``<table>_no_overlap`` for a version that overlaps another version
  of its key; ``<table>_period``, ``CHECK (expired_at IS NULL OR expired_at >
  created_at)``, refuses empty and negative periods. An update that keeps the
  key and leaves the period inside the old one (an expire, the versioning of a
  raw UPDATE, an in-place change) cannot create an overlap, since the old period
  overlapped nothing: the update trigger's ``WHEN`` clause lets it through
  without calling any trigger code or capturing the rows (the statement-level
  probe of every updated row that version 1 of the guard ran added ~30% to a
  bulk delete, ``bench/bench_guard.py``); a period that grows, moves earlier or
  changes key is probed. The probes run after the statement, with a snapshot that
  sees every commit before it (READ COMMITTED; under REPEATABLE READ the key's
  old current version is still in view and overlaps, so it refuses too). A
  library writer cannot slip past it concurrently: a version only closes under
  the row lock of its UPDATE, and a new current version waits at the unique
  current-row index for any transaction still touching the key. Two raw
  writers inserting overlapping *closed* periods of one key in two concurrent
  transactions could (only maintenance can insert closed periods: the
  versioning triggers refuse them); an exclusion constraint would refuse even that, but
  ``bench/bench_guard.py`` measured it at 3-5x the cost of the whole bulk
  statement (every expire and insert maintains a GiST index over all of
  history), against +25% on a bulk update and nothing measurable on a bulk
  delete for the triggers.
* **SQLite**: ``BEFORE INSERT`` and ``BEFORE UPDATE OF created_at, expired_at``
  triggers ``<table>_no_overlap_insert`` / ``_update`` raise an error for a
  negative period and for a version that overlaps another version of its key
  (the update trigger, as on PostgreSQL, only for a period that did not shrink).
  SQLite serialises writers, so the check cannot race. Empty periods
  ``[t, t)`` overlap nothing: the set-based bulk update uses them for an
  instant, as placeholders, inside one statement sequence.

Each check runs against the latest version of the key that starts before the new
version ends, so it costs one index probe however long the history is (earlier
versions end before that one starts, since the guard held when they were
written; :func:`overlaps` verifies exactly that for tables that had no guard).

:func:`install` is idempotent and runs when a temporal table is created and on
``temporal db upgrade``, which replaces a guard an older library version installed
(:func:`up_to_date` reads its :data:`VERSION` mark); :func:`overlaps` reports history
that is already corrupt, which :func:`install` refuses to paper over (:class:`OverlapError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, inspect, text

from temporal.errors import TemporalError
from temporal.names import derived

#: Suffix of the PostgreSQL exclusion constraint and of the SQLite triggers.
NO_OVERLAP = "_no_overlap"
PERIOD = "_period"
#: What the SQLite triggers' errors start with.
SQLITE_MESSAGE = "temporal guard"
#: The guard's version mark (PostgreSQL: its function's comment; SQLite: a comment in its
#: update trigger). ``temporal db upgrade`` replaces a guard that does not carry it.
VERSION = "temporal guard 2"
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
    """What a refusal names as its constraint (a label, not an object: never cut)."""
    return table + NO_OVERLAP


def _object(table: str, suffix: str = "") -> str:
    """The name of one of the guard's objects (triggers, functions, the CHECK)."""
    return derived(table, suffix if suffix == PERIOD else NO_OVERLAP + suffix)


def installed(conn: Connection, table: str) -> bool:
    """Does ``table`` have a guard (of this library version or an older one)?"""
    if conn.dialect.name == "postgresql":
        return conn.execute(
            text("SELECT 1 FROM pg_trigger WHERE tgname = :name AND tgrelid = "
                 "to_regclass(:table)"),
            {"name": _object(table, "_insert"), "table": _quote(conn, table)},
        ).first() is not None
    return _sqlite_trigger_sql(conn, _object(table, "_insert")) is not None


def up_to_date(conn: Connection, table: str) -> bool:
    """Installed, and the guard this library version installs (its :data:`VERSION` mark)."""
    if conn.dialect.name == "postgresql":
        return installed(conn, table) and conn.execute(
            text("SELECT obj_description(to_regprocedure(:function), 'pg_proc')"),
            {"function": _quote(conn, _object(table)) + "()"},
        ).scalar() == VERSION
    sql = _sqlite_trigger_sql(conn, _object(table, "_update"))
    return installed(conn, table) and sql is not None and f"/* {VERSION} */" in sql


def install(conn: Connection, table: str, key: Sequence[str]) -> None:
    """Give ``table`` this version's guard (nothing if it has it; an older guard is
    replaced); OverlapError if history is corrupt."""
    if up_to_date(conn, table):
        return
    found = overlaps(conn, table, key)
    if found:
        raise OverlapError(describe(found))
    remove(conn, table)
    if conn.dialect.name == "postgresql":
        _install_postgresql(conn, table, key)
    else:
        _install_sqlite(conn, table, key)


def remove(conn: Connection, table: str) -> None:
    """Drop ``table``'s guard (for ``make_plain``, the catalog's downgrade and upgrades)."""
    if conn.dialect.name == "postgresql":
        if inspect(conn).has_table(table):
            quoted = _quote(conn, table)
            for suffix in ("_insert", "_update"):
                trigger = _quote(conn, _object(table, suffix))
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger} ON {quoted}")
            conn.exec_driver_sql(f"ALTER TABLE {quoted} DROP CONSTRAINT IF EXISTS "
                                 f"{_quote(conn, _object(table, PERIOD))}")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_quote(conn, _object(table))}()")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_quote(conn, _object(table, '_update'))}()")
        return
    for suffix in ("_insert", "_update"):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_quote(conn, _object(table, suffix))}")


def _sqlite_trigger_sql(conn: Connection, name: str) -> str | None:
    sql = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = :name"),
        {"name": name},
    ).scalar()
    return None if sql is None else str(sql)


def _grew(conn: Connection, key: Sequence[str], old: str = "OLD", new: str = "NEW") -> str:
    """SQL true unless the update kept the key and the new period lies within the old one:
    only then can it not overlap another version (the old period overlapped none)."""
    same_key = " AND ".join(f"{old}.{_quote(conn, k)} = {new}.{_quote(conn, k)}" for k in key)
    within = (f"{same_key} AND {new}.created_at >= {old}.created_at AND "
              f"({old}.expired_at IS NULL OR {new}.expired_at <= {old}.expired_at)")
    return f"NOT coalesce({within}, false)"


def _install_postgresql(conn: Connection, table: str, key: Sequence[str]) -> None:
    quoted = _quote(conn, table)
    name = constraint_name(table)
    literal = name.replace("'", "''")
    conn.exec_driver_sql(
        f"ALTER TABLE {quoted} ADD CONSTRAINT {_quote(conn, _object(table, PERIOD))} "
        "CHECK (expired_at IS NULL OR expired_at > created_at)"
    )

    def probe(new: str) -> str:
        # The latest other version of the key starting before the new one ends.
        same_key = " AND ".join(f"o.{_quote(conn, k)} = {new}.{_quote(conn, k)}" for k in key)
        return (f"SELECT o.expired_at FROM ONLY {quoted} AS o WHERE {same_key} "
                f"AND o.created_at <> {new}.created_at "
                f"AND o.created_at < coalesce({new}.expired_at, 'infinity') "
                "ORDER BY o.created_at DESC LIMIT 1")

    def culprit(new: str) -> str:
        shown = ", ".join(f"{new}.{_quote(conn, k)}::text" for k in key)
        return (f"concat_ws(', ', {shown}) || ': [' || {new}.created_at || ', ' || "
                f"coalesce({new}.expired_at::text, 'open') || ') overlaps the version ending ' "
                "|| coalesce(l.expired_at::text, 'never')")

    refuse = f"""
    IF culprit IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'exclusion_violation', CONSTRAINT = '{literal}',
              MESSAGE = 'two versions of one key of ' || TG_TABLE_NAME ||
                        ' would be valid at the same moment',
              DETAIL = 'Key ' || culprit || '.';
    END IF;
    RETURN NULL;"""
    # Inserts: one set-based probe per statement over the rows it wrote (a transition table).
    conn.exec_driver_sql(f"""
CREATE FUNCTION {_quote(conn, _object(table))}() RETURNS trigger LANGUAGE plpgsql AS $guard$
DECLARE
    culprit text;
BEGIN
    SELECT {culprit('n')} INTO culprit
      FROM temporal_written AS n CROSS JOIN LATERAL ({probe('n')}) AS l
     WHERE coalesce(l.expired_at, 'infinity') > n.created_at
     LIMIT 1;{refuse}
END
$guard$""")
    # Updates: only a row whose period grew or moved (or changed key) is probed. Expiring
    # a version only shortens it, so the WHEN clause lets it through without calling the
    # function or capturing the rows in a transition table.
    update_function = _quote(conn, _object(table, '_update'))
    conn.exec_driver_sql(f"""
CREATE FUNCTION {update_function}() RETURNS trigger LANGUAGE plpgsql AS $guard$
DECLARE
    culprit text;
BEGIN
    SELECT {culprit('NEW')} INTO culprit FROM ({probe('NEW')}) AS l
     WHERE coalesce(l.expired_at, 'infinity') > NEW.created_at;{refuse}
END
$guard$""")
    conn.exec_driver_sql(f"COMMENT ON FUNCTION {_quote(conn, _object(table))}() IS '{VERSION}'")
    conn.exec_driver_sql(
        f"CREATE TRIGGER {_quote(conn, _object(table, '_insert'))} AFTER INSERT ON {quoted} "
        "REFERENCING NEW TABLE AS temporal_written FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {_quote(conn, _object(table))}()"
    )
    conn.exec_driver_sql(
        f"CREATE TRIGGER {_quote(conn, _object(table, '_update'))} AFTER UPDATE ON {quoted} "
        f"FOR EACH ROW WHEN ({_grew(conn, key)}) "
        f"EXECUTE FUNCTION {_quote(conn, _object(table, '_update'))}()"
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

    conn.exec_driver_sql(
        f"CREATE TRIGGER {_quote(conn, _object(table, '_insert'))} BEFORE INSERT ON {quoted} "
        f"BEGIN {body('')}END"
    )
    # As on PostgreSQL, an update that only shortens a period (an expire) is not probed;
    # a negative period still is.
    conn.exec_driver_sql(
        f"CREATE TRIGGER {_quote(conn, _object(table, '_update'))} BEFORE UPDATE OF created_at, "
        f"expired_at ON {quoted} WHEN NEW.expired_at < NEW.created_at OR {_grew(conn, key)} "
        f"BEGIN /* {VERSION} */ {body(' AND o.rowid <> OLD.rowid')}END"
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

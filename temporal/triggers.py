"""History whoever writes: the database versions raw SQL, psql sessions, COPY and other services.

The library versions what it writes itself; triggers on every temporal table
apply the same write semantics to everyone else, so an ``UPDATE customers SET
tier = 'gold' WHERE id = 1`` typed in psql, a data fix in a migration or a
``COPY`` load never overwrites history:

* **insert**: the new row gets the transaction's stamp and is current;
* **update** of a current version: the row takes the new values and the
  transaction's stamp, and a copy of the old version, expired at the stamp,
  goes into history (columns the statement did not set carry over unchanged);
* **delete** of a current version: it is expired at the stamp;
* a version this transaction wrote is changed (or deleted) in place, so a
  transaction leaves at most one version per key;
* history rows (and archived ones) are never touched: a raw UPDATE or DELETE
  skips them, as MariaDB's system versioning does, so ``WHERE id = 1`` just works;
* refused, as integrity errors: setting ``created_at`` / ``expired_at``
  directly, changing a key (delete and insert instead), and changing a current
  version that a younger transaction wrote (``exclusion_violation`` on
  ``<table>_no_overlap``, which the library raises as ``ConflictError``).

The library's own statements already have the versioned shape (an insert
stamped with the transaction's stamp, an expire ``NULL -> stamp``, an in-place
change of the transaction's own version), and each trigger's ``WHEN`` clause
lets exactly those shapes through without calling any trigger code, so
nothing is versioned twice and the library's write path costs what it did.
Maintenance that must move history (archival, migrations) sets the
transaction-local ``temporal.maintenance`` for the duration of the operation.

**PostgreSQL.** The stamp lives in the transaction-local setting
``temporal.stamp`` (microseconds since the epoch), taken by whoever writes
first, library or trigger, in the same way (:mod:`temporal._backend`: the
transaction id first, then the clock, unique among transactions in flight),
so raw and library writes in one transaction share it, and exports wait for
raw writers exactly as for the library's. BEFORE ROW triggers (PL/pgSQL) stamp
the new row and skip history; one AFTER STATEMENT trigger per table copies the
old versions into history from the statement's transition table, set-based, in
an INSERT generated for the table's columns (a row-level copy measured 4x
slower: every copy is a statement of its own, which the overlap guard probes;
a generic row-to-row copy through jsonb about 1.4x slower). Every statement reads
its triggers' ``WHEN`` clauses afresh, so they are kept short: the stamp is
read once in each, and the library's period-setting statements have a trigger
of their own (``UPDATE OF created_at, expired_at``) that raw statements never
read. The library's statements skip the copy through its WHEN clause; what
they pay is the capture of their old rows, a tuple copy each
(``bench/bench_triggers.py`` compares them with and without the triggers).
The generated functions name the table's columns, so they are made again when
columns change (``op.add_temporal_column`` / ``op.drop_temporal_column``,
``temporal db upgrade``); a comment on the update trigger records their
generation (:data:`PG_GENERATION`) and a digest, which :func:`up_to_date` compares.

**SQLite.** Triggers cannot tell one transaction from the next there, so a
raw statement gets a stamp of its own from the library's clock table (one per
statement, monotonic, history contiguous); inside a transaction the library
stamped, raw statements share the library's stamp. SQLite evaluates a row
trigger's ``WHEN`` clause for every row, which for the library's set-based
statements cost more than the statements themselves, so those run with the
clock's maintenance mark held for their duration (``_backend.library_statements``)
and the triggers step aside at their first test; the overlap guard still checks
every row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

from sqlalchemy import Connection, inspect, text

from temporal._backend import (
    LIBRARY_MARK,
    MAINTENANCE_MARK,
    SQLITE_CLOCK_TABLE,
    ensure_sqlite_clock,
)
from temporal.names import derived

#: Suffix of every trigger (and PostgreSQL function) this module installs.
SUFFIX = "_versioned"
#: What every refusal's message starts with.
MESSAGE = "temporal: "
#: The generation of the PostgreSQL triggers, kept in a comment on each table's update
#: trigger beside a digest of its generated copy functions: ``temporal db upgrade``
#: replaces triggers of another generation, or made for other columns.
PG_GENERATION = "temporal triggers 3"
_LOCK_CLASS = 1952804208  # the advisory-lock class of transaction stamps (see _backend)

# -- PostgreSQL ---------------------------------------------------------------------

# The transaction's stamp, NULL until someone in this transaction took one.
_PG_STAMP = ("('epoch'::timestamptz + nullif(current_setting('temporal.stamp', true), '')"
             "::bigint * interval '1 microsecond')")
_PG_WORKING = "current_setting('temporal.maintenance', true) IS DISTINCT FROM 'on'"

_PG_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION temporal_stamp() RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken text := current_setting('temporal.stamp', true);
    moment timestamptz;
    micros bigint;
BEGIN
    IF taken IS NOT NULL AND taken <> '' THEN
        RETURN 'epoch'::timestamptz + taken::bigint * interval '1 microsecond';
    END IF;
    -- The transaction id first, then the clock: an export that waits for every
    -- transaction holding an id that began by its as_of sees this one.
    PERFORM pg_current_xact_id();
    LOOP
        moment := clock_timestamp();
        micros := floor(extract(epoch FROM moment) * 1000000)::bigint;
        EXIT WHEN pg_try_advisory_xact_lock({_LOCK_CLASS}, (micros % 2147483647)::integer);
    END LOOP;
    PERFORM set_config('temporal.stamp', micros::text, true);
    RETURN 'epoch'::timestamptz + micros * interval '1 microsecond';
END $$;

CREATE OR REPLACE FUNCTION temporal_refuse(message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'temporal: %', message USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE OR REPLACE FUNCTION temporal_conflict(tab text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'temporal: %: a younger transaction wrote the current version of this key '
        'after this transaction took its timestamp; roll back and retry', tab
        USING ERRCODE = 'exclusion_violation', CONSTRAINT = tab || '_no_overlap', TABLE = tab;
END $$;

CREATE OR REPLACE FUNCTION temporal_versioned_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.expired_at IS NOT NULL OR (NEW.created_at IS NOT NULL AND
            NEW.created_at IS DISTINCT FROM temporal_stamp()) THEN
        PERFORM temporal_refuse(TG_TABLE_NAME || ': created_at and expired_at are kept by '
            'the database; leave them out of the INSERT');
    END IF;
    NEW.created_at := temporal_stamp();
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION temporal_versioned_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stamp timestamptz;
BEGIN
    IF OLD.expired_at IS NOT NULL THEN
        RETURN NULL;  -- history is immutable: skipped, never changed
    END IF;
    IF NEW.created_at IS DISTINCT FROM OLD.created_at OR NEW.expired_at IS NOT NULL THEN
        PERFORM temporal_refuse(TG_TABLE_NAME || ': created_at and expired_at are kept by '
            'the database; update the other columns, or DELETE to end a version');
    END IF;
    stamp := coalesce({_PG_STAMP}, temporal_stamp());  -- inline: this runs for every row
    IF OLD.created_at >= stamp THEN
        IF OLD.created_at > stamp THEN
            PERFORM temporal_conflict(TG_TABLE_NAME);
        END IF;
        RETURN NEW;  -- this transaction's own version: changed in place
    END IF;
    NEW.created_at := stamp;
    IF current_setting('temporal.copy', true) IS DISTINCT FROM 'update' THEN
        PERFORM set_config('temporal.copy', 'update', true);  -- the statement trigger copies
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION temporal_versioned_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.expired_at IS NOT NULL THEN
        RETURN NULL;
    END IF;
    IF OLD.created_at > coalesce({_PG_STAMP}, temporal_stamp()) THEN
        PERFORM temporal_conflict(TG_TABLE_NAME);
    END IF;
    IF current_setting('temporal.copy', true) IS DISTINCT FROM 'delete' THEN
        PERFORM set_config('temporal.copy', 'delete', true);
    END IF;
    RETURN OLD;
END $$;

CREATE OR REPLACE FUNCTION temporal_versioned_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM temporal_refuse(TG_TABLE_NAME || ': the key names the entity and cannot change; '
        'delete the row and insert a new one');
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION temporal_versioned_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM temporal_refuse(TG_TABLE_NAME || ': TRUNCATE would erase history; DELETE the '
        'current rows instead (they are expired, and history stays)');
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION temporal_versioned_archive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM temporal_refuse(TG_TABLE_NAME || ': archived history is written by '
            '`temporal archive` only');
    END IF;
    RETURN NULL;  -- archived history is immutable: skipped, never changed
END $$;
"""


def _pg(conn: Connection, sql: str) -> None:
    """Run DDL text on PostgreSQL (the driver reads ``%`` as a placeholder)."""
    conn.exec_driver_sql(sql.replace("%", "%%"))


def _name(table: str, what: str) -> str:
    """``<table>_versioned_<what>``, kept within PostgreSQL's 63 bytes."""
    return derived(table, f"{SUFFIX}_{what}")


def _earlier_name(table: str, what: str) -> str:
    """The name an earlier version gave a long table's trigger (as PostgreSQL cut it):
    dropped too, so that an upgrade never leaves two triggers versioning one write."""
    digest = hashlib.sha1(table.encode()).hexdigest()[:8]
    name = f"{table.encode()[:40].decode(errors='ignore')}_{digest}{SUFFIX}_{what}"
    return name.encode()[:63].decode(errors="ignore")


def _pg_copy_function(conn: Connection, table: str, what: str) -> str:
    """The statement trigger function that copies a raw ``what``'s old versions into history.

    Every current version the statement changed or deleted becomes history, copied
    from the transition table in one INSERT generated for the table's columns (the
    generic copy through ``jsonb_populate_record`` measured about 1.4x slower set-based).
    Columns changed by a plain ``ALTER TABLE`` are never silently lost: a column
    added since (it gets the next attribute number) sends the copy down the
    generic path until ``temporal db upgrade`` regenerates the function; a dropped
    or renamed one, or a second added one, makes the generated INSERT fail when it
    is planned again (it names the columns and casts the row to the table's type).
    A row of the same statement that the library's expire shape let through keeps
    its own version, and its copy would collide with it on the primary key: such a
    statement is refused, not mis-versioned.
    """
    q = _quoter(conn)
    t = q(table)
    columns = inspect(conn).get_columns(table)
    attributes = conn.execute(text("SELECT relnatts FROM pg_class WHERE oid = to_regclass(:t)"),
                              {"t": t}).scalar_one()
    if any(c.get("computed") for c in columns):  # computed again, never inserted
        kept = [q(c["name"]) for c in columns if not c.get("computed")
                and c["name"] not in ("created_at", "expired_at")]
        rows = (f"INSERT INTO {t} ({', '.join(kept)}, created_at, expired_at) "
                f"OVERRIDING SYSTEM VALUE SELECT {', '.join('o.' + k for k in kept)}, "
                "o.created_at, copy_stamp")
    else:
        fields = ", ".join("copy_stamp" if c["name"] == "expired_at" else "o." + q(c["name"])
                           for c in columns)
        rows = f"INSERT INTO {t} OVERRIDING SYSTEM VALUE SELECT (ROW({fields})::{t}).*"
    return f"""
CREATE OR REPLACE FUNCTION {q(_name(table, what + '_copy'))}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    copy_stamp timestamptz := coalesce({_PG_STAMP}, temporal_stamp());
BEGIN
    PERFORM set_config('temporal.copy', '', true), set_config('temporal.maintenance', 'on', true);
    IF has_column_privilege(TG_RELID, {attributes + 1}::smallint, 'SELECT') IS NULL THEN
        {rows}
            FROM temporal_old o WHERE o.expired_at IS NULL AND o.created_at < copy_stamp;
    ELSE  -- a column added since these triggers were made: the generic copy carries it
        INSERT INTO {t} OVERRIDING SYSTEM VALUE SELECT copy.* FROM temporal_old o,
            LATERAL jsonb_populate_record(o::{t}, jsonb_build_object('expired_at', copy_stamp)) copy
            WHERE o.expired_at IS NULL AND o.created_at < copy_stamp;
    END IF;
    PERFORM set_config('temporal.maintenance', '', true);
    RETURN NULL;
END $$"""


def _pg_install(conn: Connection, table: str, key: Sequence[str]) -> None:
    q = _quoter(conn)
    t = q(table)
    _pg(conn, _PG_FUNCTIONS)
    stamp, working = _PG_STAMP, _PG_WORKING
    copies = [_pg_copy_function(conn, table, what) for what in ("update", "delete")]
    for copy in copies:
        _pg(conn, copy)
    # The library's update shapes (an expire, a change of its own version, the undoing of
    # its own expire), with the stamp computed once: every statement reads this clause
    # afresh, so it is kept short.
    library_update = (
        f"NEW.created_at = OLD.created_at AND CASE {stamp} "
        "WHEN NEW.expired_at THEN OLD.expired_at IS NULL AND OLD.created_at < NEW.expired_at "
        "WHEN OLD.created_at THEN NEW.expired_at IS NOT DISTINCT FROM OLD.expired_at "
        "WHEN OLD.expired_at THEN NEW.expired_at IS NULL ELSE false END"
    )
    old_key = ", ".join(f"OLD.{q(k)}" for k in key)
    new_key = ", ".join(f"NEW.{q(k)}" for k in key)
    if len(key) == 1:
        changed_key = f"{old_key} IS DISTINCT FROM {new_key}"
    else:
        changed_key = f"ROW({old_key}) IS DISTINCT FROM ROW({new_key})"
    statements = [
        f"CREATE TRIGGER {q(_name(table, 'insert'))} BEFORE INSERT ON {t} FOR EACH ROW "
        f"WHEN ({working} AND (NEW.created_at IS NULL OR NEW.created_at IS DISTINCT FROM "
        f"{stamp} OR NEW.expired_at IS NOT NULL)) EXECUTE FUNCTION temporal_versioned_insert()",
        f"CREATE TRIGGER {q(_name(table, 'key'))} BEFORE UPDATE OF "
        f"{', '.join(q(k) for k in key)} ON {t} FOR EACH ROW "
        f"WHEN ({working} AND {changed_key}) EXECUTE FUNCTION temporal_versioned_key()",
        # Statements that set a period column: the library's, or refused.
        f"CREATE TRIGGER {q(_name(table, 'period'))} BEFORE UPDATE OF created_at, expired_at "
        f"ON {t} FOR EACH ROW WHEN ({working} AND NOT coalesce({library_update}, false)) "
        "EXECUTE FUNCTION temporal_versioned_update()",
        # The rest, the library's changes of its own versions aside: a raw UPDATE reads
        # only this short clause.
        f"CREATE TRIGGER {q(_name(table, 'update'))} BEFORE UPDATE ON {t} FOR EACH ROW "
        f"WHEN ({working} AND NEW.created_at = OLD.created_at AND NEW.expired_at IS NOT "
        f"DISTINCT FROM OLD.expired_at AND OLD.created_at IS DISTINCT FROM {stamp}) "
        "EXECUTE FUNCTION temporal_versioned_update()",
        f"CREATE TRIGGER {q(_name(table, 'update_copy'))} AFTER UPDATE ON {t} "
        "REFERENCING OLD TABLE AS temporal_old FOR EACH STATEMENT "
        "WHEN (current_setting('temporal.copy', true) = 'update') "
        f"EXECUTE FUNCTION {q(_name(table, 'update_copy'))}()",
        f"CREATE TRIGGER {q(_name(table, 'delete'))} BEFORE DELETE ON {t} FOR EACH ROW "
        f"WHEN ({working} AND NOT coalesce(OLD.created_at = {stamp} "
        "AND OLD.expired_at IS NULL, false)) EXECUTE FUNCTION temporal_versioned_delete()",
        f"CREATE TRIGGER {q(_name(table, 'delete_copy'))} AFTER DELETE ON {t} "
        "REFERENCING OLD TABLE AS temporal_old FOR EACH STATEMENT "
        "WHEN (current_setting('temporal.copy', true) = 'delete') "
        f"EXECUTE FUNCTION {q(_name(table, 'delete_copy'))}()",
    ]
    statements.append(_pg_truncate_trigger(conn, table))
    for statement in statements:
        _pg(conn, statement)
    marker = _pg_marker(copies).replace("'", "''")
    _pg(conn, f"COMMENT ON TRIGGER {q(_name(table, 'update'))} ON {t} IS '{marker}'")
    if inspect(conn).has_table(table + "_archive"):
        install_archive(conn, table)


def _pg_truncate_trigger(conn: Connection, table: str) -> str:
    """TRUNCATE removes rows without a row trigger: refused (archival and migrations,
    which run as maintenance, never truncate history)."""
    q = _quoter(conn)
    return (f"CREATE TRIGGER {q(_name(table, 'truncate'))} BEFORE TRUNCATE ON {q(table)} "
            f"FOR EACH STATEMENT WHEN ({_PG_WORKING}) "
            "EXECUTE FUNCTION temporal_versioned_truncate()")


def _pg_marker(copies: Sequence[str]) -> str:
    """What the comment on a table's update trigger says when its triggers are current."""
    digest = hashlib.sha1("".join(copies).encode()).hexdigest()[:16]
    return f"{PG_GENERATION} {digest}"


def _pg_up_to_date(conn: Connection, table: str) -> bool:
    said = conn.execute(
        text("SELECT obj_description(oid, 'pg_trigger') FROM pg_trigger "
             "WHERE tgname = :name AND tgrelid = to_regclass(:t)"),
        {"name": _name(table, "update"), "t": _quoter(conn)(table)},
    ).scalar()
    copies = [_pg_copy_function(conn, table, what) for what in ("update", "delete")]
    return bool(said == _pg_marker(copies))


def install_archive(conn: Connection, table: str) -> None:
    """Make ``<table>_archive`` immutable to raw writers (PostgreSQL: skipped, as a child
    of ``table`` that a raw UPDATE of ``table`` scans; SQLite: refused)."""
    q = _quoter(conn)
    archive = table + "_archive"
    a = q(archive)
    if conn.dialect.name == "postgresql":
        _pg(conn, _PG_FUNCTIONS)
        for what in ("insert", "update", "delete"):
            name = _name(archive, what)
            _pg(conn, f"DROP TRIGGER IF EXISTS {q(name)} ON {a}")
            _pg(conn,
                f"CREATE TRIGGER {q(name)} BEFORE {what.upper()} ON {a} FOR EACH ROW "
                f"WHEN ({_PG_WORKING}) EXECUTE FUNCTION temporal_versioned_archive()")
        _pg(conn, f"DROP TRIGGER IF EXISTS {q(_name(archive, 'truncate'))} ON {a}")
        _pg(conn, _pg_truncate_trigger(conn, archive))
        return
    ensure_sqlite_clock(conn)
    shown = archive.replace("'", "''")
    for what in ("insert", "update", "delete"):
        name = _name(archive, what)
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {q(name)}")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {q(name)} BEFORE {what.upper()} ON {a} FOR EACH ROW "
            f"WHEN {_SQLITE_WORKING} BEGIN SELECT RAISE(ABORT, 'temporal: {shown}: archived "
            "history is written by `temporal archive` only'); END")


def _pg_remove(conn: Connection, table: str) -> None:
    q = _quoter(conn)
    inspector = inspect(conn)
    if inspector.has_table(table):
        for what in ("insert", "key", "period", "update", "update_copy", "delete",
                     "delete_copy", "truncate"):
            for name in {_name(table, what), _earlier_name(table, what)}:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {q(name)} ON {q(table)}")
    for what in ("update_copy", "delete_copy"):
        for name in {_name(table, what), _earlier_name(table, what)}:
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {q(name)}()")
    archive = table + "_archive"
    if inspector.has_table(archive):
        for what in ("insert", "update", "delete", "truncate"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {q(_name(archive, what))} "
                                 f"ON {q(archive)}")


# -- SQLite ---------------------------------------------------------------------------
#
# The clock table (``_backend``) holds the last stamp handed out and a marker:
# -1 while a library transaction holds the stamp (raw statements in it share
# it; the library clears the mark when it commits), -2 during maintenance, else
# the ``julianday('now')`` of the raw statement that took the stamp. SQLite
# keeps 'now' constant for one statement, which is what gives a raw statement
# one stamp; a row that already carries the current stamp (a statement in the
# same millisecond) gets a fresh one, so a version is never changed in place
# by a statement that did not write it.

_CLOCK = SQLITE_CLOCK_TABLE
_SQLITE_WORKING = (f"(NOT EXISTS (SELECT 1 FROM {_CLOCK} WHERE id = 1 "
                   f"AND marker = {MAINTENANCE_MARK}))")
_SQLITE_LIBRARY = f"(EXISTS (SELECT 1 FROM {_CLOCK} WHERE id = 1 AND marker = {LIBRARY_MARK}))"
# The stamp as the fixed-width UTC text UTCDateTime stores.
_SQLITE_STAMP = (f"(SELECT strftime('%Y-%m-%d %H:%M:%S', stamp / 1000000, 'unixepoch') || '.' "
                 f"|| printf('%06d', stamp % 1000000) FROM {_CLOCK} WHERE id = 1)")
_SQLITE_NOW = ("(CAST(strftime('%s', 'now') AS INTEGER) * 1000000 "
               "+ CAST(substr(strftime('%f', 'now'), 4) AS INTEGER) * 1000)")
_SQLITE_STAMP_TEXT = ("strftime('%Y-%m-%d %H:%M:%S', stamp / 1000000, 'unixepoch') || '.' "
                      "|| printf('%06d', stamp % 1000000)")


def _sqlite_take_stamp(touching: str | None) -> str:
    """SQL: take this statement's stamp; ``touching`` a row's created_at that must be older."""
    keep = f"marker = {LIBRARY_MARK} OR (marker = julianday('now')"
    keep += f" AND {_SQLITE_STAMP_TEXT} > {touching})" if touching else ")"
    return (f"UPDATE {_CLOCK} SET stamp = CASE WHEN {keep} THEN stamp "
            f"ELSE max(stamp + 1, {_SQLITE_NOW}) END, marker = CASE WHEN marker = "
            f"{LIBRARY_MARK} THEN {LIBRARY_MARK} ELSE julianday('now') END WHERE id = 1; ")


def _sqlite_inside(statement: str) -> str:
    """``statement`` run as maintenance, so the triggers let it through."""
    return (f"UPDATE {_CLOCK} SET saved = marker, marker = {MAINTENANCE_MARK} WHERE id = 1; "
            f"{statement}; UPDATE {_CLOCK} SET marker = saved, saved = NULL WHERE id = 1; ")


_PERIOD_INSERT = "created_at and expired_at are kept by the database; leave them out of the INSERT"
_PERIOD_UPDATE = ("created_at and expired_at are kept by the database; update the other "
                  "columns, or DELETE to end a version")
_KEY_CHANGE = "the key names the entity and cannot change; delete the row and insert a new one"


def _sqlite_install(conn: Connection, table: str, key: Sequence[str]) -> None:
    ensure_sqlite_clock(conn)
    q = _quoter(conn)
    t = q(table)
    shown = table.replace("'", "''")
    columns = [c["name"] for c in inspect(conn).get_columns(table)]
    data = [c for c in columns if c not in ("created_at", "expired_at")]
    names = ", ".join(q(c) for c in [*data, "created_at", "expired_at"])

    def values(row: str, created: str, expired: str) -> str:
        return ", ".join([*(f"{row}.{q(c)}" for c in data), created, expired])

    stamp, working, library = _SQLITE_STAMP, _SQLITE_WORKING, _SQLITE_LIBRARY
    key_changed = " OR ".join(f"NEW.{q(k)} IS NOT OLD.{q(k)}" for k in key)

    def refuse(what: str) -> str:
        return f"SELECT RAISE(ABORT, 'temporal: {shown}: {what}')"

    conflict = refuse("a younger transaction wrote the current version of this key after this "
                      "statement took its timestamp; roll back and retry")
    # What the library writes in its own transactions passes untouched.
    library_update = (
        f"{library} AND ((OLD.expired_at IS NULL AND NEW.expired_at = {stamp} "  # an expire
        f"AND NEW.created_at = OLD.created_at AND OLD.created_at < {stamp}) "
        f"OR (OLD.created_at = {stamp} AND NEW.created_at = OLD.created_at "  # its own version
        "AND NEW.expired_at IS OLD.expired_at) "
        f"OR (OLD.created_at = {stamp} AND OLD.expired_at = {stamp} "  # a placeholder
        "AND NEW.created_at = OLD.created_at AND NEW.expired_at IS NULL) "
        f"OR (OLD.expired_at = {stamp} AND NEW.expired_at IS NULL "  # undoing its own expire
        "AND NEW.created_at = OLD.created_at))"
    )
    library_insert = (f"NEW.created_at = {stamp} AND (NEW.expired_at IS NULL OR "
                      f"NEW.expired_at = {stamp})")
    library_delete = f"{library} AND OLD.created_at = {stamp} AND OLD.expired_at IS NULL"
    statements = [
        f"CREATE TRIGGER {q(_name(table, 'insert'))} BEFORE INSERT ON {t} FOR EACH ROW "
        f"WHEN {working} AND NOT coalesce({library_insert}, 0) BEGIN "
        f"{refuse(_PERIOD_INSERT)} "
        "WHERE NEW.created_at IS NOT NULL OR NEW.expired_at IS NOT NULL; "
        f"{_sqlite_take_stamp(None)}"
        f"INSERT INTO {t} ({names}) VALUES ({values('NEW', stamp, 'NULL')}); "
        "SELECT RAISE(IGNORE); END",
        f"CREATE TRIGGER {q(_name(table, 'update'))} BEFORE UPDATE ON {t} FOR EACH ROW "
        f"WHEN {working} AND NOT coalesce({library_update}, 0) BEGIN "
        "SELECT RAISE(IGNORE) WHERE OLD.expired_at IS NOT NULL; "
        f"{refuse(_PERIOD_UPDATE)} "
        "WHERE NEW.created_at IS NOT OLD.created_at OR NEW.expired_at IS NOT NULL; "
        f"{refuse(_KEY_CHANGE)} "
        f"WHERE {key_changed}; "
        f"{_sqlite_take_stamp('OLD.created_at')}"
        f"{conflict} WHERE OLD.created_at > {stamp}; END",
        f"CREATE TRIGGER {q(_name(table, 'update_copy'))} AFTER UPDATE ON {t} FOR EACH ROW "
        f"WHEN {working} AND OLD.expired_at IS NULL AND OLD.created_at < {stamp} "
        f"AND NEW.created_at = OLD.created_at AND NEW.expired_at IS NULL BEGIN "
        + _sqlite_inside(f"UPDATE {t} SET created_at = {stamp} WHERE rowid = NEW.rowid")
        + _sqlite_inside(f"INSERT INTO {t} ({names}) VALUES "
                         f"({values('OLD', 'OLD.created_at', stamp)})")
        + "END",
        f"CREATE TRIGGER {q(_name(table, 'delete'))} BEFORE DELETE ON {t} FOR EACH ROW "
        f"WHEN {working} AND NOT coalesce({library_delete}, 0) BEGIN "
        "SELECT RAISE(IGNORE) WHERE OLD.expired_at IS NOT NULL; "
        f"{_sqlite_take_stamp('OLD.created_at')}"
        f"{conflict} WHERE OLD.created_at > {stamp}; END",
        f"CREATE TRIGGER {q(_name(table, 'delete_copy'))} AFTER DELETE ON {t} FOR EACH ROW "
        f"WHEN {working} AND OLD.expired_at IS NULL AND OLD.created_at < {stamp} BEGIN "
        + _sqlite_inside(f"INSERT INTO {t} ({names}) VALUES "
                         f"({values('OLD', 'OLD.created_at', stamp)})")
        + "END",
    ]
    for statement in statements:
        conn.exec_driver_sql(statement)
    if inspect(conn).has_table(table + "_archive"):
        install_archive(conn, table)


def _sqlite_columns(conn: Connection, table: str) -> str:
    """The column list the triggers write, in their order."""
    q = _quoter(conn)
    columns = [c["name"] for c in inspect(conn).get_columns(table)]
    data = [c for c in columns if c not in ("created_at", "expired_at")]
    return ", ".join(q(c) for c in [*data, "created_at", "expired_at"])


def _sqlite_remove(conn: Connection, table: str) -> None:
    q = _quoter(conn)
    for name in (table, table + "_archive"):
        for what in ("insert", "update", "update_copy", "delete", "delete_copy"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {q(_name(name, what))}")


def _sqlite_maintenance(conn: Connection, on: bool) -> None:
    ensure_sqlite_clock(conn)
    if on:
        conn.exec_driver_sql(f"UPDATE {_CLOCK} SET saved = marker, marker = {MAINTENANCE_MARK} "
                             "WHERE id = 1 AND marker IS NOT -2")
    else:
        conn.exec_driver_sql(f"UPDATE {_CLOCK} SET marker = saved, saved = NULL "
                             f"WHERE id = 1 AND marker = {MAINTENANCE_MARK}")


# -- the public surface ---------------------------------------------------------------


def installed(conn: Connection, table: str) -> bool:
    """Does ``table`` have its versioning triggers?"""
    name = _name(table, "update")
    if conn.dialect.name == "postgresql":
        return conn.execute(
            text("SELECT 1 FROM pg_trigger WHERE tgname = :name AND tgrelid = to_regclass(:t)"),
            {"name": name, "t": _quoter(conn)(table)},
        ).first() is not None
    return conn.execute(
        text("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = :name"),
        {"name": name},
    ).first() is not None


def up_to_date(conn: Connection, table: str) -> bool:
    """Installed, for the table's columns now, and (PostgreSQL) of this generation."""
    if not installed(conn, table):
        return False
    if conn.dialect.name == "postgresql":
        return _pg_up_to_date(conn, table)
    sql = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = :name"),
        {"name": _name(table, "delete_copy")},
    ).scalar()
    return sql is not None and _sqlite_columns(conn, table) in sql


def install(conn: Connection, table: str, key: Sequence[str]) -> None:
    """Give ``table`` its versioning triggers (replacing older ones)."""
    remove(conn, table)
    if conn.dialect.name == "postgresql":
        _pg_install(conn, table, key)
    else:
        _sqlite_install(conn, table, key)


def remove(conn: Connection, table: str) -> None:
    """Drop ``table``'s versioning triggers (``make_plain``, renames, rebuilds)."""
    if conn.dialect.name == "postgresql":
        _pg_remove(conn, table)
    else:
        _sqlite_remove(conn, table)


@contextmanager
def maintenance(conn: Connection) -> Iterator[None]:
    """Let the library's own history maintenance (archival, migrations) through the
    triggers for the statements inside; raw statements before and after stay versioned."""
    _set_maintenance(conn, True)
    try:
        yield
    finally:
        if not conn.invalidated and conn.in_transaction():
            # In an aborted transaction this fails; the rollback takes the setting along.
            with suppress(Exception):
                _set_maintenance(conn, False)


def _set_maintenance(conn: Connection, on: bool) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT set_config('temporal.maintenance', :v, true)"),
                     {"v": "on" if on else ""})
    else:
        _sqlite_maintenance(conn, on)


def _quoter(conn: Connection) -> Callable[[str], str]:
    return conn.dialect.identifier_preparer.quote

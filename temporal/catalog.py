"""The catalog: which tables are temporal, their entity key and their TTL.

The command-line jobs (export, archive, status) know every temporal table from
the database alone, without importing the application's models. They read
``temporal_tables``, one row per temporal table. Its schema is migrated by
the Alembic environment shipped in ``migrations/`` (installed as
``temporal._migrations``), which records its revision in its own version
table, ``temporal_alembic_version``, so it never collides with the
application's Alembic history.

Registration needs no step of its own: creating a temporal table, whether by
``metadata.create_all()``, ``Table.create()`` or ``op.create_table`` in a
migration, registers it with its key and TTL (a DDL ``after_create`` event),
creating the catalog first if the database has none. Dropping it unregisters
it.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)

from temporal import clock, guard, portable, triggers
from temporal._backend import SQLITE_CLOCK_TABLE
from temporal.database import engine_for
from temporal.errors import TemporalError
from temporal.model import CREATED_AT, EXPIRED_AT, TTL_INFO, is_temporal_table, key_columns
from temporal.names import check_table_name
from temporal.types import UTCDateTime

CATALOG_TABLE = "temporal_tables"
VERSION_TABLE = "temporal_alembic_version"
ARCHIVE_SUFFIX = "_archive"

metadata = MetaData()
tables = Table(
    CATALOG_TABLE,
    metadata,
    Column("table_name", String(255), primary_key=True),
    Column("key_columns", Text(), nullable=False),
    Column("ttl_seconds", BigInteger(), nullable=True),
    Column("registered_at", UTCDateTime(), nullable=False),
    # Every version that expired before this moment may be in <table>_archive.
    Column("archived_through", UTCDateTime(), nullable=True),
    # Each column's portable type (temporal.portable), as a JSON object by name.
    Column("column_types", Text(), nullable=True),
    CheckConstraint("ttl_seconds IS NULL OR ttl_seconds > 0", name="temporal_tables_ttl_positive"),
)

#: Tables the library owns; an application's autogenerate should leave them alone.
OWN_TABLES = frozenset({CATALOG_TABLE, VERSION_TABLE, SQLITE_CLOCK_TABLE})


def archive_name(table: str) -> str:
    """The table that holds ``table``'s archived versions."""
    return table + ARCHIVE_SUFFIX


def has_archive(conn: Connection, table: str) -> bool:
    return inspect(conn).has_table(archive_name(table))


def drop_archive(conn: Connection, table: str) -> None:
    if has_archive(conn, table):
        conn.exec_driver_sql(f"DROP TABLE {_quote(conn, archive_name(table))}")


def hot_only(conn: Connection, table: str) -> str:
    """``table`` for SQL text, without its archive (on PostgreSQL an inheriting child)."""
    name = _quote(conn, table)
    return f"ONLY {name}" if conn.dialect.name == "postgresql" else name


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


class CatalogError(TemporalError):
    """The catalog is missing, out of date, or does not know a table."""


@dataclass(frozen=True)
class Registration:
    """One registered temporal table."""

    table: str
    key: list[str]
    ttl: timedelta | None
    registered_at: datetime
    archived_through: datetime | None = None
    #: Portable types by column name (temporal.portable); None: none recorded.
    column_types: dict[str, Any] | None = None


# -- the Alembic environment --------------------------------------------------------


def script_location() -> str:
    """Where the catalog's Alembic environment is installed."""
    package = importlib.import_module("temporal._migrations")
    return str(Path(str(package.__file__)).parent)


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic ``Config`` for the catalog environment, bound to ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location())
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(script_location()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The catalog revision this database is at (None: no catalog)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(source: str | Engine, revision: str = "head") -> str | None:
    """Bring the catalog to ``revision``; register temporal tables it does not know yet.

    At head, every temporal table gets its guard (``guard.py``) and its versioning
    triggers (``triggers.py``). History that
    already holds overlapping versions raises :class:`~temporal.guard.OverlapError`
    naming them, and nothing is changed. Returns the revision afterwards.
    """
    from alembic import command

    with engine_for(source) as engine, engine.begin() as conn:
        _alembic(command.upgrade, conn, revision)
        if current_revision(conn) == head_revision():
            found = list(_unregistered_temporal_tables(conn))
            overlapping = [o for name, key in found for o in guard.overlaps(conn, name, key)]
            if overlapping:  # raised before anything is registered: the upgrade rolls back
                raise guard.OverlapError(guard.describe(overlapping))
            for name, key in found:
                register(conn, name, key, None)
            inspector = inspect(conn)
            for entry in registrations(conn):  # tables made by an older library, too
                if inspector.has_table(entry.table):
                    if entry.column_types is None:
                        _record_found_types(conn, entry.table)
                    guard.install(conn, entry.table, entry.key)
                    if not triggers.up_to_date(conn, entry.table):
                        triggers.install(conn, entry.table, entry.key)
        return current_revision(conn)


def _record_found_types(conn: Connection, name: str) -> None:
    """Portable types for a table registered without them: from the temporal model
    that defines it, if this process imported one, else (where the database keeps
    real types: not SQLite) from the database."""
    table = Table(name, MetaData(), autoload_with=conn)
    declared = portable.declared_columns(table)
    if conn.dialect.name == "sqlite" and not declared:
        return  # DATETIME, CHAR(32): nothing worth recording; a later upgrade may
    column_types = portable.describe_columns(
        declared.get(c.name, c) for c in table.c if c.name in declared
        or conn.dialect.name != "sqlite")
    record_types(conn, name, column_types)


def downgrade(source: str | Engine, revision: str = "base") -> str | None:
    """Take the catalog back to ``revision`` ("base" removes it). Returns the revision."""
    from alembic import command

    with engine_for(source) as engine, engine.begin() as conn:
        _alembic(command.downgrade, conn, revision)
        return current_revision(conn)


def _alembic(step: Any, conn: Connection, revision: str) -> None:
    """Run an Alembic command; an unknown or unreachable revision is one clear error."""
    from alembic.util.exc import CommandError

    try:
        step(alembic_config(conn), revision)
    except CommandError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
        raise CatalogError(f"cannot move the catalog to revision {revision!r}: {first} "
                           f"(the head is {head_revision()}; base removes the catalog)"
                           ) from None


def ensure(conn: Connection) -> None:
    """Make sure the catalog exists at head, creating it if the database has none.

    A fresh catalog is created from its metadata and stamped at head (what a
    full upgrade would produce, checked by the tests); an old one must be
    upgraded with ``temporal db upgrade`` first.
    """
    revision = current_revision(conn)  # one query; tables are created rarely
    if revision is None:
        if inspect(conn).has_table(CATALOG_TABLE):
            raise CatalogError(f"{CATALOG_TABLE} exists but has no revision in {VERSION_TABLE}; "
                               "run `temporal db upgrade`")
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        metadata.create_all(conn)
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        context.stamp(ScriptDirectory(script_location()), "head")
    elif revision != head_revision():
        raise CatalogError(f"the catalog is at revision {revision}, this library needs "
                           f"{head_revision()}: run `temporal db upgrade`")


# -- registrations -----------------------------------------------------------------


def register(conn: Connection, table: str, key: list[str], ttl: timedelta | None,
             column_types: dict[str, Any] | None = None) -> None:
    """Record (or re-record) a temporal table with its key, TTL and, when given, its
    columns' portable types (else the ones recorded before are kept)."""
    ensure(conn)
    before = conn.execute(select(tables.c.archived_through, tables.c.column_types)
                          .where(tables.c.table_name == table)).first()
    conn.execute(delete(tables).where(tables.c.table_name == table))
    conn.execute(insert(tables).values(
        table_name=table, key_columns=json.dumps(key), ttl_seconds=_seconds(ttl),
        registered_at=clock.now(), archived_through=before[0] if before else None,
        column_types=json.dumps(column_types, sort_keys=True) if column_types is not None
        else before[1] if before else None,
    ))


def recorded_types(conn: Connection, table: str) -> dict[str, Any] | None:
    """A table's recorded portable column types; None without a catalog that records
    them (none, or one older than revision 0006: exports work as before then)."""
    if not _records_types(current_revision(conn)):
        return None
    recorded = conn.execute(select(tables.c.column_types)
                            .where(tables.c.table_name == table)).scalar()
    return _types(recorded)


def record_types(conn: Connection, table: str, column_types: dict[str, Any]) -> None:
    """Record a registered table's portable column types."""
    conn.execute(update(tables).where(tables.c.table_name == table)
                 .values(column_types=json.dumps(column_types, sort_keys=True)))


def mark_archived(conn: Connection, table: str, through: datetime) -> None:
    """Record that versions expired before ``through`` may now be in the archive."""
    conn.execute(update(tables).where(
        tables.c.table_name == table,
        (tables.c.archived_through.is_(None)) | (tables.c.archived_through < through),
    ).values(archived_through=through))


def unregister(conn: Connection, table: str) -> None:
    if inspect(conn).has_table(CATALOG_TABLE):
        conn.execute(delete(tables).where(tables.c.table_name == table))


def registrations(conn: Connection) -> list[Registration]:
    """Every registered temporal table, by name (empty without a catalog)."""
    revision = current_revision(conn)
    if revision is None:
        return []
    recorded = _records_types(revision)  # an older catalog has no column_types (yet)
    rows = conn.execute(select(*[c for c in tables.c if recorded or c.name != "column_types"])
                        .order_by(tables.c.table_name))
    return [Registration(table=r.table_name, key=json.loads(r.key_columns),
                         ttl=None if r.ttl_seconds is None else timedelta(seconds=r.ttl_seconds),
                         registered_at=r.registered_at, archived_through=r.archived_through,
                         column_types=_types(r.column_types) if recorded else None)
            for r in rows]


def _records_types(revision: str | None) -> bool:
    """Whether a catalog at ``revision`` has the column_types column (0006 on)."""
    return revision is not None and revision.isdigit() and revision >= "0006"


def _types(recorded: str | None) -> dict[str, Any] | None:
    try:
        loaded = json.loads(recorded) if recorded is not None else None
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


def registration(conn: Connection, table: str) -> Registration:
    """One table's registration; CatalogError names the known tables if it has none."""
    known = registrations(conn)
    for entry in known:
        if entry.table == table:
            return entry
    names = ", ".join(e.table for e in known) or "none"
    raise CatalogError(f"{table!r} is not a registered temporal table (registered: {names})")


def lookup(source: str | Engine, table: str) -> Registration:
    """A registered table's key and TTL, by URL or Engine."""
    with engine_for(source) as engine, engine.connect() as conn:
        return registration(conn, table)


def set_ttl(source: str | Engine, table: str, ttl: timedelta | None) -> Registration:
    """Change a registered table's TTL (None: keep its history forever)."""
    if ttl is not None and ttl <= timedelta(0):
        raise CatalogError(f"a TTL must be positive, not {ttl}")
    with engine_for(source) as engine, engine.begin() as conn:
        registration(conn, table)
        conn.execute(update(tables).where(tables.c.table_name == table)
                     .values(ttl_seconds=_seconds(ttl)))
        return registration(conn, table)


def _seconds(ttl: timedelta | None) -> int | None:
    return None if ttl is None else max(1, round(ttl.total_seconds()))


# -- status ------------------------------------------------------------------------


@dataclass(frozen=True)
class TableStatus:
    table: str
    key: list[str]
    ttl: timedelta | None
    current_rows: int
    history_rows: int
    archived_rows: int | None  # None: no archive yet
    size_bytes: int | None
    registered: bool = True
    archived_through: datetime | None = None
    #: Versioning triggers installed: raw SQL, psql and COPY writers are versioned too.
    guarded: bool = False


@dataclass(frozen=True)
class Status:
    revision: str | None
    head: str
    tables: list[TableStatus]


def status(source: str | Engine) -> Status:
    """The catalog's revision and every temporal table with its row counts and size."""
    with engine_for(source) as engine, engine.connect() as conn:
        known = {r.table: r for r in registrations(conn)}
        found = dict(_unregistered_temporal_tables(conn))
        rows = []
        for name in sorted(set(known) | set(found)):
            entry = known.get(name)
            current, history = conn.exec_driver_sql(
                "SELECT count(*) FILTER (WHERE expired_at IS NULL), "
                f"count(*) FILTER (WHERE expired_at IS NOT NULL) FROM {hot_only(conn, name)}"
            ).one()
            archived = None
            if has_archive(conn, name):
                archived = conn.exec_driver_sql(
                    f"SELECT count(*) FROM {_quote(conn, archive_name(name))}").scalar_one()
            rows.append(TableStatus(
                table=name, key=entry.key if entry else found[name],
                ttl=entry.ttl if entry else None, current_rows=current, history_rows=history,
                archived_rows=archived, size_bytes=_size(conn, name),
                registered=entry is not None,
                archived_through=entry.archived_through if entry else None,
                guarded=triggers.installed(conn, name),
            ))
        return Status(revision=current_revision(conn), head=head_revision(), tables=rows)


def _size(conn: Connection, name: str) -> int | None:
    if conn.dialect.name == "postgresql":
        size = conn.execute(select(func.pg_total_relation_size(func.to_regclass(
            _quote(conn, name))))).scalar_one()
        return int(size) if size is not None else None
    try:  # the dbstat table is compiled into most SQLite builds, not all
        size = conn.exec_driver_sql(
            "SELECT sum(pgsize) FROM dbstat WHERE name = ? OR name IN "
            "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?)",
            (name, name)).scalar_one()
    except Exception:
        return None
    return int(size) if size is not None else None


def temporal_shape(table: Table) -> list[str] | None:
    """The entity key of a table shaped like a temporal one (reflected), else None."""
    return _key_of_shape(set(table.c.keys()), [c.name for c in table.primary_key.columns])


def _key_of_shape(columns: set[str], primary_key: list[str]) -> list[str] | None:
    """Temporal shape: both period columns, created_at in the primary key. Its key."""
    if not {CREATED_AT, EXPIRED_AT} <= columns or CREATED_AT not in primary_key:
        return None
    return [c for c in primary_key if c != CREATED_AT]


def _unregistered_temporal_tables(conn: Connection) -> Iterator[tuple[str, list[str]]]:
    """Temporal-shaped tables the catalog does not list (made before it existed)."""
    known = {r.table for r in registrations(conn)}
    inspector = inspect(conn)
    for name in inspector.get_table_names():
        if name in known or name in OWN_TABLES or name.endswith(ARCHIVE_SUFFIX):
            continue
        key = _key_of_shape({c["name"] for c in inspector.get_columns(name)},
                            inspector.get_pk_constraint(name)["constrained_columns"])
        if key is not None:
            yield name, key


# -- registration on CREATE / DROP -----------------------------------------------------


@event.listens_for(Table, "after_create")
def _on_create(table: Table, connection: Connection, **kw: Any) -> None:
    # Offline (--sql) migrations have no connection: `temporal db upgrade` registers
    # the tables they create, and guards them, when it next runs.
    if is_temporal_table(table) and isinstance(connection, Connection):
        seconds = table.info.get(TTL_INFO)
        key = [c.name for c in key_columns(table)]
        register(connection, table.name, key, None if seconds is None else
                 timedelta(seconds=seconds), portable.describe_columns(table.c))
        guard.install(connection, table.name, key)
        triggers.install(connection, table.name, key)


@event.listens_for(Table, "before_create")
def _check_name(table: Table, connection: Connection, **kw: Any) -> None:
    if is_temporal_table(table):
        check_table_name(table.name, connection.dialect.name)


@event.listens_for(Table, "before_drop")
def _drop_archive(table: Table, connection: Connection, **kw: Any) -> None:
    # The archive is the table's own history (on PostgreSQL, an inheriting child
    # that would block the DROP): it goes with the table. Only a table the catalog
    # records has one; a plain `orders` never takes a plain `orders_archive` along.
    if isinstance(connection, Connection) and _is_registered(connection, table):
        drop_archive(connection, table.name)


@event.listens_for(Table, "after_drop")
def _on_drop(table: Table, connection: Connection, **kw: Any) -> None:
    # By name: the Table an Alembic drop_table builds does not carry the mark.
    if isinstance(connection, Connection) and _is_registered(connection, table):
        unregister(connection, table.name)


def _is_registered(conn: Connection, table: Table) -> bool:
    if table.schema is not None or table.name in OWN_TABLES or not \
            inspect(conn).has_table(CATALOG_TABLE):
        return False
    return conn.execute(select(tables.c.table_name)
                        .where(tables.c.table_name == table.name)).first() is not None

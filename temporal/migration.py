"""Alembic operations for an application's own migrations.

With :mod:`temporal` imported, they are registered on Alembic's ``op`` as soon as
``alembic.operations`` is imported (``hooks.after_import``), which Alembic does
before it runs a migration environment::

    op.make_temporal("customers")                    # plain -> temporal, in place
    op.make_plain("customers")                       # back: current rows only
    op.add_temporal_column("customers", sa.Column("tier", sa.String(), nullable=False),
                           fill="basic")             # what existing versions hold
    op.drop_temporal_column("customers", "tier")
    op.set_temporal_ttl("customers", timedelta(days=90))

Each has a ``reverse()``, so autogenerate and downgrades can undo it. They
need a live connection (not ``--sql`` offline mode): they read the table's
current shape first. On PostgreSQL they alter the table in place; SQLite
cannot change a primary key or a column's nullability in place, so there the
table is rebuilt in one savepoint (rename, create, copy, drop), the way
SQLite's own documentation prescribes.

For autogenerate, pass :func:`include_name` to ``context.configure`` so the
library's own tables (the catalog, ``<table>_archive``) are never proposed
for dropping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from alembic.operations import MigrateOperation, Operations, ops
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
    case,
    delete,
    insert,
    inspect,
    literal,
    select,
    update,
)
from sqlalchemy.schema import CreateIndex, DropIndex
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnElement

from temporal import _backend, catalog, guard, hooks, references, triggers
from temporal.clock import aware, isoformat
from temporal.errors import TemporalError
from temporal.model import (
    CREATED_AT,
    EXPIRED_AT,
    TEMPORAL_INFO,
    TTL_INFO,
    _temporal_table_args,
    current_index,
    history_index_name,
    split_indexes,
)
from temporal.names import check_table_name, current_index_name, expired_index_name
from temporal.types import UTCDateTime


class MigrationError(TemporalError):
    """A migration step that cannot be done as asked (nothing was changed)."""


# "Not given" (``None`` is a real fill: NULL). Ellipsis, because Alembic re-renders
# the defaults of registered operations as source text.
MISSING: Any = ...


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Alembic ``include_name`` hook: leave temporal's own tables out of autogenerate."""
    if type_ != "table" or name is None:
        return True
    return name not in catalog.OWN_TABLES and not name.endswith(catalog.ARCHIVE_SUFFIX)


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Alembic ``render_item`` hook: the period columns render as plain
    ``sa.DateTime(timezone=True)``, so a migration never imports temporal's types."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def alembic_options(*, include_name: Any = None, render_item: Any = None) -> dict[str, Any]:
    """Keyword arguments for ``context.configure()`` in an application's ``env.py``.

    ``context.configure(connection=..., target_metadata=..., **alembic_options())``;
    your own ``include_name`` / ``render_item`` hooks, if any, are consulted too.
    """
    own_include, own_render = globals()["include_name"], globals()["render_item"]

    def include(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        return bool(own_include(name, type_, parent_names)
                    and (include_name is None or include_name(name, type_, parent_names)))

    def render(type_: str, obj: Any, autogen_context: Any) -> str | bool:
        rendered: str | bool = own_render(type_, obj, autogen_context)
        if rendered is False and render_item is not None:
            theirs: str | bool = render_item(type_, obj, autogen_context)
            return theirs
        return rendered

    return {"include_name": include, "render_item": render}


# -- the operations ------------------------------------------------------------------


@Operations.register_operation("make_temporal")
class MakeTemporalOp(MigrateOperation):
    """Make an existing plain table temporal, in place, keeping every row as current."""

    def __init__(self, table_name: str, *, since: datetime | None = None,
                 ttl: timedelta | None = None) -> None:
        self.table_name = table_name
        self.since = since
        self.ttl = ttl

    @classmethod
    def make_temporal(cls, operations: Operations, table_name: str, *,
                      since: datetime | None = None, ttl: timedelta | None = None) -> None:
        """Add ``created_at``/``expired_at``; every existing row becomes a version that
        began at ``since`` (default: now); the key becomes (key, created_at) and unique
        constraints become unique among current rows; the table is registered."""
        operations.invoke(cls(table_name, since=since, ttl=ttl))

    def reverse(self) -> MakePlainOp:
        return MakePlainOp(self.table_name)


@Operations.register_operation("make_plain")
class MakePlainOp(MigrateOperation):
    """Turn a temporal table back into a plain one: only current rows stay."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    @classmethod
    def make_plain(cls, operations: Operations, table_name: str) -> None:
        """Delete history, drop the period columns, restore the key and unique
        constraints, unregister the table."""
        operations.invoke(cls(table_name))

    def reverse(self) -> MakeTemporalOp:
        return MakeTemporalOp(self.table_name)


@Operations.register_operation("add_temporal_column")
class AddTemporalColumnOp(MigrateOperation):
    """Add a column to a temporal table, saying what existing versions hold."""

    def __init__(self, table_name: str, column: Column[Any], *, fill: Any = MISSING,
                 history_fill: Any = MISSING) -> None:
        self.table_name = table_name
        self.column = column
        self.fill = fill
        self.history_fill = history_fill

    @classmethod
    def add_temporal_column(cls, operations: Operations, table_name: str, column: Column[Any],
                            *, fill: Any = MISSING, history_fill: Any = MISSING) -> None:
        """``fill`` is the value (or SQL expression) for current rows, ``history_fill``
        for older versions (default: ``fill``). A NOT NULL column without a server
        default needs ``fill``: history never gets a silent NULL."""
        operations.invoke(cls(table_name, column, fill=fill, history_fill=history_fill))

    def reverse(self) -> DropTemporalColumnOp:
        return DropTemporalColumnOp(self.table_name, self.column.name, restore=self.column,
                                    fill=self.fill, history_fill=self.history_fill)


@Operations.register_operation("drop_temporal_column")
class DropTemporalColumnOp(MigrateOperation):
    """Drop a data column from a temporal table, from every version."""

    def __init__(self, table_name: str, column_name: str, *, restore: Column[Any] | None = None,
                 fill: Any = MISSING, history_fill: Any = MISSING) -> None:
        self.table_name = table_name
        self.column_name = column_name
        self.restore = restore
        self.fill = fill
        self.history_fill = history_fill

    @classmethod
    def drop_temporal_column(cls, operations: Operations, table_name: str, column_name: str,
                             *, restore: Column[Any] | None = None, fill: Any = MISSING,
                             history_fill: Any = MISSING) -> None:
        """``restore`` (with ``fill``) describes the column for the reverse operation."""
        operations.invoke(cls(table_name, column_name, restore=restore, fill=fill,
                              history_fill=history_fill))

    def reverse(self) -> AddTemporalColumnOp:
        if self.restore is None:
            raise ValueError(f"drop_temporal_column({self.table_name!r}, {self.column_name!r}) "
                             "cannot be reversed without restore=Column(...) and fill=")
        return AddTemporalColumnOp(self.table_name, self.restore, fill=self.fill,
                                   history_fill=self.history_fill)


@Operations.register_operation("set_temporal_ttl")
class SetTemporalTtlOp(MigrateOperation):
    """Change a temporal table's TTL in the catalog."""

    def __init__(self, table_name: str, ttl: timedelta | None, *,
                 previous: timedelta | None = None) -> None:
        self.table_name = table_name
        self.ttl = ttl
        self.previous = previous

    @classmethod
    def set_temporal_ttl(cls, operations: Operations, table_name: str, ttl: timedelta | None,
                         *, previous: timedelta | None = None) -> None:
        operations.invoke(cls(table_name, ttl, previous=previous))

    def reverse(self) -> SetTemporalTtlOp:
        return SetTemporalTtlOp(self.table_name, self.previous, previous=self.ttl)


# -- implementations --------------------------------------------------------------------


def _maintained(implementation: Callable[[Operations, Any], None]
                ) -> Callable[[Operations, Any], None]:
    """Run an operation as maintenance: it moves history, which raw writers may not.
    Statements of the migration before and after it stay versioned."""

    @functools.wraps(implementation)
    def run(operations: Operations, op: Any) -> None:
        conn = operations.get_bind()
        if conn is None or operations.get_context().as_sql:
            implementation(operations, op)  # refused there, with the reason
            return
        with triggers.maintenance(conn):
            implementation(operations, op)

    return run


@Operations.implementation_for(MakeTemporalOp)
@_maintained
def _make_temporal(operations: Operations, op: MakeTemporalOp) -> None:
    conn = _bind(operations)
    old = _reflect(conn, op.table_name)
    if catalog.temporal_shape(old) is not None:
        raise MigrationError(f"{op.table_name} is already temporal")
    check_table_name(op.table_name, conn.dialect.name)
    key = [c.name for c in old.primary_key.columns]
    if not key:
        raise MigrationError(f"{op.table_name} has no primary key; a temporal table needs one "
                             "to name its entities")
    if CREATED_AT in old.c or EXPIRED_AT in old.c:
        raise MigrationError(f"{op.table_name} already has a column named {CREATED_AT} or "
                             f"{EXPIRED_AT}; rename it first")
    _refuse_references(conn, op.table_name)
    since = _since(conn, op.since)
    new = _temporal_target(old, op.ttl)
    if conn.dialect.name == "postgresql":
        name = op.table_name
        operations.add_column(name, Column(CREATED_AT, UTCDateTime(), nullable=True))
        operations.add_column(name, Column(EXPIRED_AT, UTCDateTime(), nullable=True))
        conn.execute(update(new).values({CREATED_AT: since}))
        operations.alter_column(name, CREATED_AT, nullable=False)
        pk_name = _pk_name(old)
        operations.drop_constraint(pk_name, name, type_="primary")
        operations.create_primary_key(pk_name, name, [*key, CREATED_AT])
        for constraint in _unique_constraints(old):
            operations.drop_constraint(str(constraint.name), name, type_="unique")
        for index in old.indexes:
            if index.unique:
                operations.drop_index(str(index.name), name)
        existing = {str(i.name) for i in old.indexes if not i.unique}
        quote = conn.dialect.identifier_preparer.quote
        for index, history in _split_pairs(new):
            if index.name in existing:  # the full index lives on as the history twin
                conn.exec_driver_sql(f"ALTER INDEX {quote(str(index.name))} "
                                     f"RENAME TO {quote(history)}")
                existing = (existing - {str(index.name)}) | {history}
        for index in new.indexes:
            if str(index.name) not in existing:
                conn.execute(CreateIndex(index))
        catalog.register(conn, name, key, op.ttl)
        guard.install(conn, name, key)
        triggers.install(conn, name, key)
    else:
        copied = [old.c[c.name] for c in new.c if c.name not in (CREATED_AT, EXPIRED_AT)]
        _rebuild_sqlite(conn, old, new, [*copied, literal(since, UTCDateTime()),
                                         literal(None, UTCDateTime())])


@Operations.implementation_for(MakePlainOp)
@_maintained
def _make_plain(operations: Operations, op: MakePlainOp) -> None:
    conn, old, key = _temporal(operations, op.table_name, "")
    current_only = old.c[EXPIRED_AT].is_(None)
    catalog.drop_archive(conn, op.table_name)  # history goes, archived history too
    if conn.dialect.name == "postgresql":
        name = op.table_name
        guard.remove(conn, name)
        triggers.remove(conn, name)
        conn.execute(delete(old).where(~current_only))
        uniques = [ix for ix in old.indexes if _current_unique(ix, name)]
        for index in old.indexes:
            if index.name in (current_index_name(name), expired_index_name(name)) \
                    or index in uniques:
                conn.execute(DropIndex(index))
        quote = conn.dialect.identifier_preparer.quote
        for index, history in _split_pairs(old):
            # The full twin becomes the index again (the partial one would go with
            # expired_at anyway).
            conn.execute(DropIndex(index))
            conn.exec_driver_sql(f"ALTER INDEX {quote(history)} RENAME TO {quote(str(index.name))}")
        pk_name = _pk_name(old)
        operations.drop_constraint(pk_name, name, type_="primary")
        operations.create_primary_key(pk_name, name, key)
        for index in uniques:
            operations.create_unique_constraint(index.name, name, [c.name for c in index.columns])
        operations.drop_column(name, EXPIRED_AT)
        operations.drop_column(name, CREATED_AT)
    else:
        new = _plain_target(old, key)
        _rebuild_sqlite(conn, old, new, [old.c[c.name] for c in new.c], where=current_only)
    catalog.unregister(conn, op.table_name)


@Operations.implementation_for(AddTemporalColumnOp)
@_maintained
def _add_temporal_column(operations: Operations, op: AddTemporalColumnOp) -> None:
    conn, old, key = _temporal(operations, op.table_name, "; use op.add_column")
    column = op.column
    if column.name in old.c:
        raise MigrationError(f"{op.table_name} already has a column {column.name!r}")
    if column.primary_key:
        raise MigrationError("a temporal table's key cannot grow; make a new table")
    fill, history = op.fill, op.history_fill
    if fill is MISSING and column.server_default is None:
        if not column.nullable:
            raise MigrationError(
                f"{op.table_name}.{column.name} is NOT NULL: say what existing versions hold "
                "with fill=... (and history_fill=... for versions older than the current "
                "ones, if different)")
        fill = None
    if history is MISSING:
        history = fill
    unique = bool(column.unique)
    target = column._copy()
    target.unique = False
    current = old.c[EXPIRED_AT].is_(None)
    if conn.dialect.name == "postgresql":
        name = op.table_name
        nullable = target.nullable
        target.nullable = True
        operations.add_column(name, target)
        if fill is not MISSING:
            table = _reflect(conn, name)
            now = table.c[EXPIRED_AT].is_(None)
            conn.execute(update(table).where(now).values({column.name: fill}))
            conn.execute(update(table).where(~now).values({column.name: history}))
        if not nullable:
            operations.alter_column(name, column.name, nullable=False)
        if unique:
            table = _reflect(conn, name)
            conn.execute(CreateIndex(_unique_among_current(table, column.name)))
        triggers.install(conn, name, key)  # the history copy names the table's columns
        return
    new = _copy_shape(old, add=[target])
    if unique:
        _unique_among_current(new, column.name)
    columns = [c for c in new.c if c.name != column.name]
    values: list[Any] = [old.c[c.name] for c in columns]
    if fill is not MISSING:  # else the server default fills the new column
        columns.append(new.c[column.name])
        values.append(_case(current, fill, history, target))
    _rebuild_sqlite(conn, old, new, values, columns=columns)
    if catalog.has_archive(conn, op.table_name):  # archived versions get history_fill
        archived = catalog.archive_name(op.table_name)
        operations.add_column(archived, Column(column.name, column.type, nullable=True))
        if fill is not MISSING:
            conn.execute(update(_reflect(conn, archived)).values({column.name: history}))


@Operations.implementation_for(DropTemporalColumnOp)
@_maintained
def _drop_temporal_column(operations: Operations, op: DropTemporalColumnOp) -> None:
    conn, old, key = _temporal(operations, op.table_name, "; use op.drop_column")
    if op.column_name not in old.c:
        raise MigrationError(f"{op.table_name} has no column {op.column_name!r}")
    if op.column_name in (*key, CREATED_AT, EXPIRED_AT):
        raise MigrationError(f"{op.column_name} is part of {op.table_name}'s key or period and "
                             "cannot be dropped")
    if conn.dialect.name == "postgresql":
        operations.drop_column(op.table_name, op.column_name)
        triggers.install(conn, op.table_name, key)  # the history copy names the columns
        return
    new = _copy_shape(old, drop=op.column_name)
    _rebuild_sqlite(conn, old, new, [old.c[c.name] for c in new.c])
    if catalog.has_archive(conn, op.table_name):
        operations.drop_column(catalog.archive_name(op.table_name), op.column_name)


@Operations.implementation_for(SetTemporalTtlOp)
def _set_temporal_ttl(operations: Operations, op: SetTemporalTtlOp) -> None:
    conn = _bind(operations)
    entry = catalog.registration(conn, op.table_name)
    catalog.register(conn, op.table_name, entry.key, op.ttl)


@Operations.implementation_for(ops.CreateForeignKeyOp)
def _create_foreign_key(operations: Operations, op: ops.CreateForeignKeyOp) -> None:
    """Alembic's own ``op.create_foreign_key``, except that a foreign key to a temporal
    table references its entity-key table (as one declared in a CREATE does)."""
    constraint = op.to_constraint(operations.migration_context)
    conn = operations.get_bind()
    if isinstance(conn, Connection) and not operations.get_context().as_sql \
            and isinstance(constraint, ForeignKeyConstraint):
        references.point_at_key_table(conn, constraint)
    operations.impl.add_constraint(constraint)


# -- helpers --------------------------------------------------------------------------


def _bind(operations: Operations) -> Connection:
    conn = operations.get_bind()
    if conn is None or operations.get_context().as_sql:
        raise MigrationError("temporal's migration operations need a database connection; "
                             "they do not run in --sql (offline) mode")
    _backend.dialect_name(conn)
    return conn


def _temporal(operations: Operations, name: str, hint: str
              ) -> tuple[Connection, Table, list[str]]:
    """The connection, the reflected temporal table and its key (or MigrationError)."""
    conn = _bind(operations)
    table = _reflect(conn, name)
    key = catalog.temporal_shape(table)
    if key is None:
        raise MigrationError(f"{name} is not temporal{hint}")
    return conn, table, key


def _reflect(conn: Connection, name: str) -> Table:
    if not inspect(conn).has_table(name):
        raise MigrationError(f"no table named {name!r}")
    return Table(name, MetaData(), autoload_with=conn)


def _refuse_references(conn: Connection, name: str) -> None:
    inspector = inspect(conn)
    for other in inspector.get_table_names():
        for fk in inspector.get_foreign_keys(other):
            if fk["referred_table"] == name and other != name:
                raise MigrationError(
                    f"{other} has a foreign key to {name}; a temporal table's key is not "
                    "unique across versions, so drop that foreign key first (keep the join "
                    "with relationship(primaryjoin=..., foreign(...)))")


def _pk_name(table: Table) -> str:
    name = table.primary_key.name
    return name if isinstance(name, str) and name else f"{table.name}_pkey"


def _since(conn: Connection, since: datetime | None) -> datetime:
    now = _backend.database_now(conn)
    if since is None:
        return now
    moment = aware(since, what="since")
    if moment > now:
        raise MigrationError(f"since={isoformat(moment)} is in the future")
    return moment


def _unique_constraints(table: Table) -> list[UniqueConstraint]:
    return [c for c in table.constraints if isinstance(c, UniqueConstraint)
            and not isinstance(c, PrimaryKeyConstraint)]


def _current_unique(index: Index, table_name: str) -> bool:
    """A partial unique index over current rows (the temporal form of a unique constraint)."""
    if not index.unique or index.name == current_index_name(table_name):
        return False
    where = (index.dialect_options["postgresql"].get("where")
             or index.dialect_options["sqlite"].get("where"))
    text = " ".join(str(where).lower().replace("(", " ").replace(")", " ").split())
    return text == f"{EXPIRED_AT} is null"


def _others(old: Table, metadata: MetaData) -> None:
    """Copy the tables ``old`` refers to, so foreign keys compile in ``metadata``."""
    for table in old.metadata.tables.values():
        if table is not old and table.name not in metadata.tables:
            table.to_metadata(metadata)


def _kept_constraints(old: Table, drop: str | None = None) -> list[Any]:
    kept: list[Any] = []
    for constraint in old.constraints:
        if isinstance(constraint, ForeignKeyConstraint):
            if drop not in constraint.column_keys:
                kept.append(ForeignKeyConstraint(
                    constraint.column_keys, [e.target_fullname for e in constraint.elements],
                    name=constraint.name, ondelete=constraint.ondelete,
                    onupdate=constraint.onupdate))
        elif isinstance(constraint, CheckConstraint):
            kept.append(CheckConstraint(constraint.sqltext, name=constraint.name))
    return kept


def _plain_indexes(old: Table, skip: set[str], drop: str | None = None) -> list[Index]:
    return [Index(index.name, *[c.name for c in index.columns])
            for index in old.indexes
            if not index.unique and index.name not in skip
            and drop not in {c.name for c in index.columns}]


def _temporal_target(old: Table, ttl: timedelta | None) -> Table:
    """The temporal shape of a plain table, built the way the mixin builds one."""
    metadata = MetaData()
    _others(old, metadata)
    name = old.name
    columns = [c._copy() for c in old.c]
    columns += [Column(CREATED_AT, UTCDateTime(), primary_key=True, autoincrement=False),
                Column(EXPIRED_AT, UTCDateTime(), nullable=True)]
    by_name = {c.name for c in old.c}
    # Unique constraints become unique indexes over current rows, named the way the
    # mixin names them unless the constraint had a name of its own.
    uniques = [UniqueConstraint(*cols, name=_own_name(name, cols, str(u.name or "")))
               for u in _unique_constraints(old) if (cols := [c.name for c in u.columns])]
    uniques += [UniqueConstraint(*cols, name=_own_name(name, cols, str(ix.name or "")))
                for ix in old.indexes
                if ix.unique and (cols := [c.name for c in ix.columns]) and set(cols) <= by_name]
    args = [*columns, *uniques, *_kept_constraints(old), *_plain_indexes(old, set())]
    hooks.install()
    info: dict[str, Any] = {TEMPORAL_INFO: True}
    if ttl is not None:
        info[TTL_INFO] = max(1, round(ttl.total_seconds()))
    table = Table(name, metadata, *_temporal_table_args(name, tuple(args)), info=info)
    split_indexes(table)
    return table


def _own_name(table: str, columns: list[str], name: str) -> str | None:
    """A constraint's name unless the database made it up (PostgreSQL's ``t_col_key``)."""
    generated = f"{table}_{'_'.join(columns)}_key"
    return None if not name or name == generated or name.startswith("sqlite_autoindex") \
        else name


def _plain_target(old: Table, key: list[str]) -> Table:
    metadata = MetaData()
    _others(old, metadata)
    name = old.name
    columns = []
    for column in old.c:
        if column.name in (CREATED_AT, EXPIRED_AT):
            continue
        copy = column._copy()
        copy.primary_key = column.name in key
        columns.append(copy)
    uniques = [UniqueConstraint(*[c.name for c in ix.columns], name=ix.name)
               for ix in old.indexes if _current_unique(ix, name)]
    skip = {current_index_name(name), expired_index_name(name),
            *(h for _, h in _split_pairs(old))}
    return Table(name, metadata, *columns, *uniques, *_kept_constraints(old),
                 *_plain_indexes(old, skip))


def _split_pairs(table: Table) -> list[tuple[Index, str]]:
    """(partial index, name of its full ``_history`` twin) of a temporal table's own
    indexes (``model.split_indexes``)."""
    names = {ix.name for ix in table.indexes}
    return [(ix, history_index_name(str(ix.name))) for ix in table.indexes
            if not ix.unique and history_index_name(str(ix.name)) in names]


def _copy_shape(old: Table, *, add: Sequence[Column[Any]] = (), drop: str | None = None
                ) -> Table:
    """A temporal table's shape with a column added or dropped (for SQLite rebuilds)."""
    metadata = MetaData()
    _others(old, metadata)
    columns = [c._copy() for c in old.c if c.name != drop]
    indexes = []
    for index in old.indexes:
        names = [c.name for c in index.columns]
        if drop in names:
            continue
        indexes.append(Index(index.name, *names, unique=bool(index.unique),
                             sqlite_where=index.dialect_options["sqlite"].get("where")))
    # No temporal mark in info: the table stays registered as it is (with its TTL).
    return Table(old.name, metadata, *columns, *add, *_kept_constraints(old, drop), *indexes)


def _unique_among_current(table: Table, column: str) -> Index:
    """What ``unique=True`` on a column becomes in a temporal table (named as the mixin
    names it)."""
    return current_index(f"uq_{table.name}_{column}", [table.c[column]],
                         table.c[EXPIRED_AT].is_(None))


def _case(current: ColumnElement[bool], fill: Any, history: Any, column: Column[Any]) -> Any:
    def value(v: Any) -> Any:
        return v if isinstance(v, ColumnElement) else literal(v, column.type)

    return case((current, value(fill)), else_=value(history))


@contextmanager
def _savepoint(conn: Connection) -> Iterator[None]:
    conn.exec_driver_sql("SAVEPOINT temporal_rebuild")
    try:
        yield
    except BaseException:
        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT temporal_rebuild")
        conn.exec_driver_sql("RELEASE SAVEPOINT temporal_rebuild")
        raise
    conn.exec_driver_sql("RELEASE SAVEPOINT temporal_rebuild")


def _rebuild_sqlite(conn: Connection, old: Table, new: Table, values: list[Any],
                    where: ColumnElement[bool] | None = None,
                    columns: list[Column[Any]] | None = None) -> None:
    """SQLite: replace ``old`` by ``new``, copying ``values`` (one per new column)."""
    name = old.name
    parked = f"_temporal_old_{name}"
    quote = conn.dialect.identifier_preparer.quote
    with _savepoint(conn):
        guard.remove(conn, name)  # the triggers would follow the renamed table
        triggers.remove(conn, name)
        legacy = conn.exec_driver_sql("PRAGMA legacy_alter_table").scalar()
        conn.exec_driver_sql("PRAGMA legacy_alter_table = ON")  # views keep the name
        conn.exec_driver_sql(f"ALTER TABLE {quote(name)} RENAME TO {quote(parked)}")
        conn.exec_driver_sql(f"PRAGMA legacy_alter_table = {int(bool(legacy))}")
        for index in old.indexes:
            conn.exec_driver_sql(f"DROP INDEX {quote(str(index.name))}")
        new.create(conn)  # registers it when it is made temporal
        parked_table = Table(parked, MetaData(), *[Column(c.name, c.type) for c in old.c])
        query = select(*[_retarget(v, old, parked_table) for v in values])
        if where is not None:
            query = query.where(_retarget(where, old, parked_table))
        key = catalog.temporal_shape(new)
        if key is not None:  # before the copy, which it checks
            guard.install(conn, name, key)
            triggers.install(conn, name, key)  # naming the new table's columns
        conn.execute(insert(new).from_select(list(columns or new.c), query))
        conn.exec_driver_sql(f"DROP TABLE {quote(parked)}")


def _retarget(element: Any, old: Table, new: Table) -> Any:
    """``element`` with ``old``'s columns replaced by ``new``'s."""
    if not isinstance(element, ColumnElement):
        return element

    def swap(item: Any) -> Any:
        if isinstance(item, Column) and item.table is old:
            return new.c[item.name]
        return None

    opts: dict[str, Any] = {}
    swapped: Any = visitors.replacement_traverse(element, opts, swap)  # type: ignore[call-overload]
    return swapped

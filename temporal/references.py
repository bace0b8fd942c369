"""Foreign keys to temporal tables, enforced by the database.

A temporal table stores many rows per entity, so its entity key is unique
only among current rows and PostgreSQL refuses it as the target of a foreign
key (SQLite would accept one and check nothing useful). Yet other tables,
plain or temporal, want to say "this column names a customer" and have the
database hold them to it.

So each temporal table that a foreign key points at gets an **entity-key
table**, ``temporal_keys_<table>``: one row per entity that ever existed,
keyed by the entity key. The library maintains it:

* it is created (and filled from the rows, archive included) when the first
  table with a foreign key to the temporal table is created;
* a trigger adds the key of every inserted version, whoever writes it (ORM,
  bulk statement, raw SQL);
* it is never pruned: archival moves versions but not keys.

The application declares an ordinary ``ForeignKey("customers.id")``; the ORM
uses it as always to infer joins and sync keys, and the DDL makes it
``REFERENCES temporal_keys_customers (id)``. What the database then enforces:

* a reference must name an entity that exists or existed: an unknown id is
  refused on insert and on update, by both backends;
* **deleting an entity keeps references valid.** Its history stays, so a
  reference still names it: an as-of read through the reference finds the
  entity as it was, a current read finds none (as for a deleted row that was
  referenced with ``ON DELETE SET NULL`` semantics left to the application).
  Removing a key that is still referenced (a raw ``DELETE`` on the
  entity-key table) is refused by the database.

On SQLite, foreign keys are only checked on connections with
``PRAGMA foreign_keys = ON`` (SQLite's own rule, for plain tables too).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, ForeignKeyConstraint, MetaData, Table, event, inspect
from sqlalchemy.ext.compiler import compiles

from temporal import catalog
from temporal.model import is_temporal_table, key_columns
from temporal.names import derived

PREFIX = "temporal_keys_"
_INFO = "temporal_keys_table"


def key_table_name(table: str) -> str:
    """The entity-key table of temporal table ``table``."""
    return derived(table, "", PREFIX)


def _referenced_temporal(conn: Connection, constraint: ForeignKeyConstraint) -> Table | None:
    """The temporal table ``constraint`` points at, if any (by mark, or by the catalog)."""
    target = constraint.elements[0].column.table if constraint.elements else None
    if target is None or not isinstance(target, Table) or target.schema is not None:
        return None
    if is_temporal_table(target):
        return target
    # A table built by a migration carries no mark: ask the catalog.
    if target.name in {r.table for r in catalog.registrations(conn)}:
        return Table(target.name, MetaData(), autoload_with=conn)
    return None


def ensure_key_table(conn: Connection, table: Table) -> str:
    """Create ``temporal_keys_<table>`` unless it exists, filled and maintained once
    ``table`` exists; its name."""
    name = key_table_name(table.name)
    if inspect(conn).has_table(name):
        return name
    key = key_columns(table)
    Table(name, MetaData(), *[Column(c.name, c.type, primary_key=True, autoincrement=False)
                              for c in key]).create(conn)
    if inspect(conn).has_table(table.name):
        _maintain(conn, table)
    return name


def _maintain(conn: Connection, table: Table) -> None:
    """Fill the key table from every version and keep it filled with a trigger."""
    name = key_table_name(table.name)
    table_name = table.name
    key = key_columns(table)
    quote = conn.dialect.identifier_preparer.quote
    cols = ", ".join(quote(c.name) for c in key)
    new = ", ".join(f"NEW.{quote(c.name)}" for c in key)
    source = quote(table_name)
    fill = f"SELECT DISTINCT {cols} FROM {source}"  # on PostgreSQL, the archive too (a child)
    if conn.dialect.name == "sqlite" and catalog.has_archive(conn, table_name):
        fill += f" UNION SELECT {cols} FROM {quote(catalog.archive_name(table_name))}"
    conn.exec_driver_sql(f"INSERT INTO {quote(name)} ({cols}) {fill}")
    trigger = quote(name + "_fill")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO {quote(name)} ({cols}) VALUES ({new}) ON CONFLICT DO NOTHING; "
            "RETURN NEW; END $$")
        conn.exec_driver_sql(f"CREATE TRIGGER {trigger} BEFORE INSERT ON {source} "
                             f"FOR EACH ROW EXECUTE FUNCTION {trigger}()")
    else:
        conn.exec_driver_sql(f"CREATE TRIGGER {trigger} BEFORE INSERT ON {source} BEGIN "
                             f"INSERT OR IGNORE INTO {quote(name)} ({cols}) VALUES ({new}); END")


def drop_key_table(conn: Connection, table_name: str) -> None:
    name = key_table_name(table_name)
    if not inspect(conn).has_table(name):
        return
    quote = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql(f"DROP TABLE {quote(name)}")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {quote(name + '_fill')}()")


def point_at_key_table(conn: Connection, constraint: ForeignKeyConstraint) -> None:
    """Make ``constraint`` reference its temporal table's key table, if it points at one."""
    target = _referenced_temporal(conn, constraint)
    if target is not None:
        constraint.info[_INFO] = ensure_key_table(conn, target)


@event.listens_for(Table, "before_create")
def _point_at_key_tables(table: Table, connection: Connection, **kw: Any) -> None:
    if not isinstance(connection, Connection):
        return  # offline (--sql) migrations: nothing to look up
    for constraint in table.foreign_key_constraints:
        point_at_key_table(connection, constraint)


@event.listens_for(Table, "after_create")
def _maintain_self_referenced(table: Table, connection: Connection, **kw: Any) -> None:
    # A temporal table with a foreign key to itself: its key table was made
    # before it, its trigger can only come after.
    if isinstance(connection, Connection) and any(
            constraint.info.get(_INFO) == key_table_name(table.name)
            for constraint in table.foreign_key_constraints):
        _maintain(connection, table)


@event.listens_for(Table, "after_drop")
def _drop_key_table(table: Table, connection: Connection, **kw: Any) -> None:
    if isinstance(connection, Connection) and is_temporal_table(table):
        drop_key_table(connection, table.name)


@compiles(ForeignKeyConstraint)
def _references_key_table(constraint: ForeignKeyConstraint, compiler: Any, **kw: Any) -> str:
    text: str = compiler.visit_foreign_key_constraint(constraint, **kw)
    keys = constraint.info.get(_INFO)
    if keys is None:
        return text
    target = compiler.preparer.format_table(constraint.elements[0].column.table)
    return text.replace(f"REFERENCES {target} (",
                        f"REFERENCES {compiler.preparer.quote(keys)} (", 1)


"""Current indexes: a temporal table's own plain indexes cover current rows only.

Tables created before this revision have each plain index the model declared
over every version. For every registered table, each non-unique index on plain
columns with no WHERE of its own (not the table's ``_current`` / ``_expired_at``
indexes, none on the period columns) keeps its full form under the name
``<name>_history`` (for as-of and history reads) and is recreated under its own
name ``WHERE expired_at IS NULL`` (what the mixin declares since; see
``temporal.model.split_indexes``). On PostgreSQL the full index is renamed and
the partial one built from its own definition (method, INCLUDE, options kept);
SQLite cannot rename an index, so the full one is rebuilt under the new name.
Expression indexes on SQLite are left as they are. Downgrade reverses it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from temporal.model import CREATED_AT, EXPIRED_AT, HISTORY, history_index_name

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_CURRENT = f"{EXPIRED_AT} IS NULL"


def _registered(conn: sa.Connection) -> list[str]:
    names = conn.execute(sa.text("SELECT table_name FROM temporal_tables "
                                 "ORDER BY table_name")).scalars().all()
    inspector = sa.inspect(conn)
    return [n for n in names if inspector.has_table(n)]


def _where(index: Any) -> str | None:
    options = index.get("dialect_options") or {}
    return options.get("postgresql_where") or options.get("sqlite_where")


def _full_plain_indexes(conn: sa.Connection, table: str) -> list[Any]:
    names = {i["name"] for i in sa.inspect(conn).get_indexes(table)}
    found = []
    for index in sa.inspect(conn).get_indexes(table):
        name = index["name"]
        columns = index.get("column_names") or []
        if index.get("unique") or name in (f"{table}_current", f"{table}_expired_at") \
                or name.endswith(HISTORY) or history_index_name(name) in names \
                or _where(index) is not None or CREATED_AT in columns or EXPIRED_AT in columns:
            continue
        if conn.dialect.name == "sqlite" and (not columns or None in columns):
            continue  # an expression index: its text cannot be rebuilt from reflection
        found.append(index)
    return found


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def upgrade() -> None:
    conn = op.get_bind()
    for table in _registered(conn):
        for index in _full_plain_indexes(conn, table):
            name = index["name"]
            history = history_index_name(name)
            if conn.dialect.name == "postgresql":
                definition = conn.execute(
                    sa.text("SELECT pg_get_indexdef(to_regclass(:name))"),
                    {"name": _quote(conn, name)}).scalar_one()
                conn.exec_driver_sql(f"ALTER INDEX {_quote(conn, name)} "
                                     f"RENAME TO {_quote(conn, history)}")
                conn.exec_driver_sql(f"{definition} WHERE {_CURRENT}".replace("%", "%%"))
            else:
                columns = ", ".join(_quote(conn, c) for c in index["column_names"])
                on = f"ON {_quote(conn, table)} ({columns})"
                conn.exec_driver_sql(f"CREATE INDEX {_quote(conn, history)} {on}")
                conn.exec_driver_sql(f"DROP INDEX {_quote(conn, name)}")
                conn.exec_driver_sql(f"CREATE INDEX {_quote(conn, name)} {on} WHERE {_CURRENT}")


def downgrade() -> None:
    conn = op.get_bind()
    for table in _registered(conn):
        indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes(table)}
        for name, index in indexes.items():
            history = history_index_name(name)
            if history not in indexes or _where(index) is None:
                continue
            conn.exec_driver_sql(f"DROP INDEX {_quote(conn, name)}")
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"ALTER INDEX {_quote(conn, history)} "
                                     f"RENAME TO {_quote(conn, name)}")
            else:
                columns = ", ".join(_quote(conn, c) for c in indexes[history]["column_names"])
                conn.exec_driver_sql(f"CREATE INDEX {_quote(conn, name)} "
                                     f"ON {_quote(conn, table)} ({columns})")
                conn.exec_driver_sql(f"DROP INDEX {_quote(conn, history)}")

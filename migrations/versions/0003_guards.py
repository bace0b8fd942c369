"""Guards: the database refuses two versions of one key valid at the same moment.

Installs ``temporal.guard`` on every registered table (an exclusion constraint
on PostgreSQL, triggers on SQLite) after checking that its history holds no
overlap already; an overlap stops the upgrade with the rows to fix, and nothing
is changed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from temporal import guard

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _registered() -> list[tuple[str, list[str]]]:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT table_name, key_columns FROM temporal_tables "
                                "ORDER BY table_name")).all()
    inspector = sa.inspect(conn)
    return [(name, json.loads(key)) for name, key in rows if inspector.has_table(name)]


def upgrade() -> None:
    conn = op.get_bind()
    registered = _registered()
    found = [o for name, key in registered for o in guard.overlaps(conn, name, key)]
    if found:
        raise guard.OverlapError(guard.describe(found))
    for name, key in registered:
        guard.install(conn, name, key)


def downgrade() -> None:
    conn = op.get_bind()
    for name, _ in _registered():
        guard.remove(conn, name)

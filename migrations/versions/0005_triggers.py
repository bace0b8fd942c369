"""Versioning triggers: raw SQL, psql sessions, COPY and other services are versioned too.

Installs ``temporal.triggers`` on every registered table and its archive
(PL/pgSQL triggers on PostgreSQL, triggers on SQLite), so writers that never
import the library keep history as the library does.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from temporal import triggers

revision = "0005"
down_revision = "0004"
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
    for name, key in _registered():
        triggers.install(conn, name, key)


def downgrade() -> None:
    conn = op.get_bind()
    for name, _ in _registered():
        triggers.remove(conn, name)

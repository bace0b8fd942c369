"""Archival: remember up to when each table's history was moved to its archive.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("temporal_tables",
                  sa.Column("archived_through", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("temporal_tables") as batch:
        batch.drop_column("archived_through")

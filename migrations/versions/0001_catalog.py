"""The catalog: one row per temporal table (its key and TTL).

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "temporal_tables",
        sa.Column("table_name", sa.String(255), primary_key=True),
        sa.Column("key_columns", sa.Text(), nullable=False),
        sa.Column("ttl_seconds", sa.BigInteger(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ttl_seconds IS NULL OR ttl_seconds > 0",
                           name="temporal_tables_ttl_positive"),
    )


def downgrade() -> None:
    op.drop_table("temporal_tables")

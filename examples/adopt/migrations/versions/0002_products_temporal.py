"""Adopt temporal: products keeps its history from now on.

Revision ID: 0002
Revises: 0001
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every existing row becomes the current version, valid since now; the key
    # becomes (id, created_at); sku stays unique among current rows; the table
    # is registered with its TTL for `temporal archive`.
    op.make_temporal("products", ttl=timedelta(days=365))
    # A new NOT NULL column: what existing versions hold is said here, not a NULL.
    op.add_temporal_column("products", sa.Column("currency", sa.String(3), nullable=False),
                           fill="EUR")


def downgrade() -> None:
    op.drop_temporal_column("products", "currency")
    op.make_plain("products")  # keeps only the current rows

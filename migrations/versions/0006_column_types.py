"""Portable column types: what each temporal table's columns were declared as.

Exports of SQLite tables read them when the application's models are not
imported (``temporal.portable``). ``temporal db upgrade`` fills them for the
tables registered before this revision, from their models if the process
imported them, else (on PostgreSQL) from the database.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("temporal_tables", sa.Column("column_types", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("temporal_tables") as batch:
        batch.drop_column("column_types")

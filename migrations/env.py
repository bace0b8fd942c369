"""Alembic environment for temporal's catalog tables.

It runs on a connection handed over by :mod:`temporal.catalog` (never from an
``alembic.ini``) and records its revision in ``temporal_alembic_version``.
"""

from __future__ import annotations

from alembic import context

from temporal import catalog

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run temporal's catalog migrations through `temporal db upgrade`")

context.configure(
    connection=connection,
    target_metadata=catalog.metadata,
    version_table=catalog.VERSION_TABLE,
    include_name=lambda name, type_, parent: type_ != "table" or name in catalog.metadata.tables,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()

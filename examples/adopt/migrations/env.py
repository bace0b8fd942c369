"""The application's Alembic env.py: two lines differ from the stock template."""

from __future__ import annotations

from alembic import context
from models import Base
from sqlalchemy import engine_from_config, pool

from temporal.migration import alembic_options  # 1. temporal's autogenerate hooks

config = context.config
connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                 prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      **alembic_options())  # 2. leave temporal's own tables alone
    with context.begin_transaction():
        context.run_migrations()

"""The Alembic environment of temporal's own catalog tables (shipped as temporal._migrations)."""

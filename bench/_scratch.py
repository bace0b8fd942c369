"""A scratch PostgreSQL database for a benchmark run, created and dropped on the server."""

from __future__ import annotations

from sqlalchemy import create_engine, text


def create(url: str, name: str) -> str:
    """(Re)create database ``name`` next to ``url``; return its URL."""
    base = create_engine(url, isolation_level="AUTOCOMMIT")
    with base.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base.dispose()
    return base.url.set(database=name).render_as_string(hide_password=False)


def drop(url: str, name: str) -> None:
    base = create_engine(url, isolation_level="AUTOCOMMIT")
    with base.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    base.dispose()

"""Names the library gives the objects it makes for a table, within PostgreSQL's limit.

PostgreSQL cuts every identifier to 63 bytes, silently: two names that differ
only past the cut become one, and a lookup by the full name finds nothing. A
derived name that would be longer keeps the start of the table's name and adds
a digest of all of it, so it stays distinct, stable and within the limit.
"""

from __future__ import annotations

import hashlib

MAX_BYTES = 63


def derived(table: str, suffix: str, prefix: str = "") -> str:
    """``prefix + table + suffix``, or past 63 bytes ``prefix + <start of table>_<digest>
    + suffix``, 63 bytes long at most."""
    full = prefix + table + suffix
    if len(full.encode()) <= MAX_BYTES:
        return full
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    room = MAX_BYTES - len(prefix.encode()) - len(suffix.encode()) - len(digest) - 1
    return f"{prefix}{table.encode()[:room].decode(errors='ignore')}_{digest}{suffix}"


def current_index_name(table: str) -> str:
    """The unique index over a table's current rows (one per key)."""
    return derived(table, "_current")


def expired_index_name(table: str) -> str:
    """The partial index over a table's expired versions."""
    return derived(table, "_expired_at")


def check_table_name(table: str, dialect: str) -> None:
    """Refuse a temporal table whose ``<table>_archive`` PostgreSQL would cut: the
    archive's name is a promise to outside code, so it is never shortened."""
    from temporal.catalog import archive_name
    from temporal.errors import UnsupportedError

    archive = archive_name(table)
    if dialect == "postgresql" and len(archive.encode()) > MAX_BYTES:
        raise UnsupportedError(
            f"table name {table!r} is too long for a temporal table on PostgreSQL: its "
            f"archive {archive!r} would pass PostgreSQL's {MAX_BYTES}-byte limit on names "
            f"(a temporal table's name may be at most {MAX_BYTES - len(archive) + len(table)} "
            "bytes)")

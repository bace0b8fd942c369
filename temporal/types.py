"""A timestamp type that is timezone-aware UTC on every backend.

PostgreSQL stores ``timestamptz``. SQLite has no timestamp type: SQLAlchemy
stores fixed-width ISO text and drops the offset, so this type writes naive
UTC there and hands back aware UTC on the way out. Fixed-width text sorts
chronologically, which keeps every period comparison correct in SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from temporal.clock import UTC, aware


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always returns aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = aware(value)
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text, e.g. from a textual query
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        """SQLite: the fixed-width text this type stores, parsed as UTC in one step.

        The same values as the general path (the dialect's parser, then
        :meth:`process_result_value`), which every other value still takes; every
        loaded version has two of these columns, so this is most of a load's type work.
        """
        general = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite":
            return general
        parse = datetime.fromisoformat

        def process(value: Any) -> datetime | None:
            if type(value) is str and len(value) == 26 and value[19] == ".":
                try:
                    return parse(value + "+00:00")  # "YYYY-MM-DD HH:MM:SS.ffffff", naive UTC
                except ValueError:
                    pass
            return general(value) if general is not None else value

        return process

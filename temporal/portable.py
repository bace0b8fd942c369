"""Portable column types: what the catalog records of a temporal table's columns.

SQLite keeps no types worth the name: a UTC instant is ``DATETIME`` text, a
UUID ``CHAR(32)``, a decimal ``NUMERIC``. An export that reads such a table
without the application's models would encode its values by those
database-declared types and give another canonical text, and digest, than
the same data on PostgreSQL. So when a temporal table is created (or when
``temporal db upgrade`` meets one the catalog has no types for), the catalog
records each column's type as a small JSON object of a portable SQLAlchemy
type - ``{"type": "Numeric", "precision": 38, "scale": 10}`` - and exports
rebuild the types from it.

A record is used only while the column is still declared as the recorded
type would declare it on that database (``NUMERIC(38, 10)``, ``CHAR(32)``):
a column changed since by a migration falls back to its declared type
rather than to a stale record.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect

from temporal.encoding import column_type
from temporal.model import Temporal

_SQLITE_DIALECT = sqlite.dialect()

#: The SQLAlchemy types a record may name, most specific first, with the
#: constructor arguments that change how values are stored or read.
_PORTABLE: dict[str, tuple[type[sqltypes.TypeEngine[Any]], tuple[str, ...]]] = {
    "Boolean": (sqltypes.Boolean, ()),
    "SmallInteger": (sqltypes.SmallInteger, ()),
    "BigInteger": (sqltypes.BigInteger, ()),
    "Integer": (sqltypes.Integer, ()),
    "Double": (sqltypes.Double, ("asdecimal",)),
    "Float": (sqltypes.Float, ("precision", "asdecimal")),
    "Numeric": (sqltypes.Numeric, ("precision", "scale", "asdecimal")),
    "DateTime": (sqltypes.DateTime, ("timezone",)),
    "Date": (sqltypes.Date, ()),
    "Time": (sqltypes.Time, ("timezone",)),
    "Interval": (sqltypes.Interval, ("native", "second_precision", "day_precision")),
    "JSON": (sqltypes.JSON, ()),
    "Uuid": (sqltypes.Uuid, ("as_uuid", "native_uuid")),
    "LargeBinary": (sqltypes.LargeBinary, ("length",)),
    "Text": (sqltypes.Text, ("length",)),
    "String": (sqltypes.String, ("length",)),
}


def describe_columns(columns: Any) -> dict[str, dict[str, Any]]:
    """The records of a table's columns that have a portable type, by name."""
    records = {}
    for column in columns:
        record = describe(column.type)
        if record is not None:
            records[column.name] = record
    return records


def describe(kind: sqltypes.TypeEngine[Any]) -> dict[str, Any] | None:
    """The record of a column declared as ``kind`` (None: no portable type behind it).

    A TypeDecorator is recorded as the type it stores (``UTCDateTime`` as
    ``DateTime(timezone=True)``), which is what decides the stored values.
    """
    base = kind
    while isinstance(base, sqltypes.TypeDecorator):
        base = base.impl_instance
    for name, (cls, arguments) in _PORTABLE.items():
        if isinstance(base, cls):
            record: dict[str, Any] = {"type": name}
            for argument in arguments:
                value = getattr(base, argument, None)
                if isinstance(value, (bool, int, str)):
                    record[argument] = value
            return record
    return None


def rebuild(record: Any) -> sqltypes.TypeEngine[Any] | None:
    """The type a record names (None: not a record this version can read)."""
    if not isinstance(record, dict) or record.get("type") not in _PORTABLE:
        return None
    cls, arguments = _PORTABLE[record["type"]]
    try:
        return cls(**{k: v for k, v in record.items() if k in arguments})
    except (TypeError, ValueError):
        return None


def still_declared(record_type: sqltypes.TypeEngine[Any], declared: sqltypes.TypeEngine[Any],
                   dialect: Dialect) -> bool:
    """Whether a column declared as ``declared`` is still what the record describes."""
    try:
        return bool(_spelling(record_type, dialect) == _spelling(declared, dialect))
    except Exception:  # a type without DDL on this dialect
        return False


def _spelling(kind: sqltypes.TypeEngine[Any], dialect: Dialect) -> str:
    return " ".join(str(kind.compile(dialect=dialect)).upper().replace(",", ", ").split())


def declared_columns(table: Table) -> dict[str, Column[Any]]:
    """The columns of the temporal model (imported in this process) that defines
    ``table``, if exactly one definition of that name and those columns is known."""
    names = {c.name for c in table.c}
    found: dict[str, list[Column[Any]]] = {}
    pending: list[type] = [Temporal]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        model_table = getattr(cls, "__table__", None)
        if isinstance(model_table, Table) and model_table.name == table.name \
                and model_table.schema is None and {c.name for c in model_table.c} == names:
            for column in model_table.c:
                found.setdefault(column.name, []).append(column)
    dialect = _SQLITE_DIALECT
    declared = {}
    for name, columns in found.items():
        kinds = {column_type(c.type, dialect) for c in columns}
        if len(kinds) == 1:  # models that disagree: the database's own types
            declared[name] = columns[0]
    return declared


def recorded_types(conn: Connection, table: Table) -> dict[str, sqltypes.TypeEngine[Any]]:
    """The types the catalog recorded for ``table``'s columns, where each column is
    still declared as its record says (empty without a catalog or a record)."""
    from temporal.catalog import recorded_types as records_of

    records = records_of(conn, table.name) or {}
    found = {}
    for column in table.c:
        kind = rebuild(records.get(column.name))
        if kind is not None and still_declared(kind, column.type, conn.dialect):
            found[column.name] = kind
    return found

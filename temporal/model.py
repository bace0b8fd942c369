"""The :class:`Temporal` mixin: one table, many versions per entity.

A temporal model looks like any other declarative model. Its primary key
columns name the *entity*; the physical table keeps every version of that
entity, so the table's real primary key is ``(entity key..., created_at)``
while the ORM still identifies objects by the entity key alone.

The database itself guards history: a partial unique index on the entity key
``WHERE expired_at IS NULL`` refuses a second current row, and any
``unique=True`` column or ``UniqueConstraint`` the model declares becomes
"unique among current rows" for the same reason. That index is also what makes
current-state reads as cheap as on a plain table; as-of reads by key use the
primary key ``(key, created_at)``.

Two columns are added: ``created_at`` (when the version began) and
``expired_at`` (when it ended, NULL while current), both timezone-aware UTC.
A version is valid on ``[created_at, expired_at)``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import (
    Column,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from temporal import _compat
from temporal.errors import UnsupportedError
from temporal.types import UTCDateTime

CREATED_AT = "created_at"
EXPIRED_AT = "expired_at"
#: ``Table.info`` keys: the mark of a temporal table and its TTL in seconds. Alembic
#: renders ``info`` into ``op.create_table``, so a migration registers the table too.
TEMPORAL_INFO = "temporal"
TTL_INFO = "temporal_ttl"
_PERIOD = frozenset({CREATED_AT, EXPIRED_AT})


class Temporal:
    """Mixin that makes a declarative model versioned.

    Put it before your declarative base::

        class Customer(Temporal, Base):
            __tablename__ = "customers"
            __temporal_ttl__ = timedelta(days=90)   # optional, see archive()
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str]
    """

    __temporal_ttl__: ClassVar[timedelta | None] = None

    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, primary_key=True, autoincrement=False, sort_order=1000
    )
    expired_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, default=None, sort_order=1001
    )

    @classmethod
    def __table_cls__(cls, name: str, metadata: MetaData, *args: Any, **kw: Any) -> Table:
        return temporal_table(name, metadata, args, kw, cls.__temporal_ttl__, cls.__name__)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"primary_key": list(key_columns(cls.__table__))}  # type: ignore[attr-defined]

    def __init_subclass__(cls, **kw: Any) -> None:
        # A model's own __mapper_args__ (eager_defaults, polymorphic_on, ...) would
        # hide the mixin's and make the mapper key (id, created_at): merge them
        # instead, before the declarative base maps the class.
        owner = next(c for c in cls.__mro__ if "__mapper_args__" in c.__dict__)
        own = owner.__dict__["__mapper_args__"]
        if owner is not Temporal and not getattr(own, "_temporal_merged", False):
            cls.__mapper_args__ = _merged_mapper_args(own)  # type: ignore[method-assign]
        super().__init_subclass__(**kw)


def _merged_mapper_args(own: Any) -> Any:
    def __mapper_args__(cls: Any) -> dict[str, Any]:
        given = own.fget(cls) if isinstance(own, declared_attr) else own
        given = dict(given.__get__(None, cls)() if isinstance(given, classmethod) else given)
        table = getattr(cls, "__table__", None)
        if "primary_key" not in given and isinstance(table, Table) and is_temporal_table(table):
            given["primary_key"] = list(key_columns(table))
        return given

    __mapper_args__._temporal_merged = True  # type: ignore[attr-defined]
    return declared_attr.directive(__mapper_args__)


def temporal_table(name: str, metadata: MetaData, args: tuple[Any, ...], kw: dict[str, Any],
                   ttl: timedelta | None, owner: str) -> Table:
    """Build the physical table of a temporal model or association table."""
    info = {**kw.pop("info", {}), TEMPORAL_INFO: True}
    if ttl is not None:
        if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
            raise TypeError(f"{owner}.__temporal_ttl__ must be a positive timedelta")
        info[TTL_INFO] = max(1, round(ttl.total_seconds()))
    return Table(name, metadata, *_temporal_table_args(name, args), info=info, **kw)


def is_temporal_table(table: Any) -> bool:
    """True for a table created by the :class:`Temporal` mixin."""
    return isinstance(table, Table) and bool(table.info.get(TEMPORAL_INFO))


def key_columns(table: Table) -> list[Column[Any]]:
    """The entity key: the primary key without ``created_at``."""
    return [c for c in table.primary_key.columns if c.name != CREATED_AT]


def _temporal_table_args(name: str, args: tuple[Any, ...]) -> list[Any]:
    """Reshape a model's columns and constraints into the temporal table shape."""
    columns = [a for a in args if isinstance(a, Column)]
    by_name = {c.name: c for c in columns}
    if EXPIRED_AT not in by_name or CREATED_AT not in by_name:
        raise UnsupportedError(
            f"temporal table {name!r} has no period columns: a joined-table subclass of a "
            "temporal model is not supported; use single-table inheritance (no __tablename__ "
            "on the subclass)")
    expired_at = by_name[EXPIRED_AT]
    current = expired_at.is_(None)
    declared = [a for a in args if isinstance(a, PrimaryKeyConstraint)]
    declared_key: list[str] = []
    for constraint in declared:
        # A key declared as PrimaryKeyConstraint("a", "b") names the entity like
        # primary_key=True columns do; the table's own key adds created_at.
        for column_name in _compat.constraint_column_names(constraint):
            if column_name not in by_name:
                raise UnsupportedError(
                    f"temporal model {name!r}: PrimaryKeyConstraint names {column_name!r}, "
                    "which is not one of its columns")
            by_name[column_name].primary_key = True
            declared_key.append(column_name)
    key = [c for c in columns if c.primary_key and c.name not in _PERIOD]
    if declared_key:
        key.sort(key=lambda c: declared_key.index(c.name) if c.name in declared_key
                 else len(declared_key))
    if not key:
        raise UnsupportedError(
            f"temporal model {name!r} needs primary key columns (primary_key=True or "
            "PrimaryKeyConstraint(...)): they name the entity")

    out: list[Any] = []
    for item in args:
        if isinstance(item, PrimaryKeyConstraint):
            # Re-declared with created_at, under the name it was given.
            out.append(PrimaryKeyConstraint(*(c.name for c in key), CREATED_AT,
                                            name=item.name if isinstance(item.name, str) else None))
            continue
        if isinstance(item, UniqueConstraint):
            # History repeats values, so uniqueness can only hold among current rows.
            cols = [by_name[c] for c in _compat.constraint_column_names(item)]
            index_name = item.name if isinstance(item.name, str) else \
                f"uq_{name}_{'_'.join(c.name for c in cols)}"
            out.append(current_index(index_name, cols, current))
        else:
            out.append(item)
    for column in columns:
        if column.unique and column.name not in _PERIOD:
            column.unique = False
            out.append(current_index(f"uq_{name}_{column.name}", [column], current))

    if len(key) == 1 and _is_integer(key[0]) and key[0].autoincrement == "auto" \
            and key[0].default is None and key[0].server_default is None:
        # With created_at in the primary key the table key is composite, which
        # switches autoincrement off; the entity id still wants generating. An
        # identity column does it on PostgreSQL; on SQLite (which has no
        # identity columns) the writer hands out the next id itself.
        Identity()._set_parent_with_dispatch(key[0])

    out.append(current_index(f"{name}_current", key, current))
    out.append(Index(f"{name}_expired_at", expired_at,
                     postgresql_where=expired_at.isnot(None),
                     sqlite_where=expired_at.isnot(None)))
    return out


def current_index(name: str, columns: list[Column[Any]], current: Any) -> Index:
    """A unique index over current rows only (``current``: expired_at IS NULL)."""
    return Index(name, *columns, unique=True, postgresql_where=current, sqlite_where=current)


def _is_integer(column: Column[Any]) -> bool:
    affinity = column.type._type_affinity
    return affinity is not None and issubclass(affinity, Integer)

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

import hashlib
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Column, Identity, Index, Integer, MetaData, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from temporal import hooks
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
        hooks.install()  # the first temporal table: now the session listeners matter
        info = {**kw.pop("info", {}), TEMPORAL_INFO: True}
        ttl = cls.__temporal_ttl__
        if ttl is not None:
            if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
                raise TypeError(f"{cls.__name__}.__temporal_ttl__ must be a positive timedelta")
            info[TTL_INFO] = max(1, round(ttl.total_seconds()))
        table = Table(name, metadata, *_temporal_table_args(name, args), info=info, **kw)
        split_indexes(table)
        return table

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"primary_key": list(key_columns(cls.__table__))}  # type: ignore[attr-defined]


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
    expired_at = by_name[EXPIRED_AT]
    current = expired_at.is_(None)
    key = [c for c in columns if c.primary_key and c.name not in _PERIOD]
    if not key:
        raise TypeError(f"temporal model {name!r} needs primary key columns: they name the entity")

    out: list[Any] = []
    for item in args:
        if isinstance(item, UniqueConstraint):
            # History repeats values, so uniqueness can only hold among current rows.
            cols: list[Column[Any]] = [by_name[c] if isinstance(c, str) else c  # type: ignore[misc]
                                       for c in item._pending_colargs]
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


def split_indexes(table: Table) -> None:
    """Each of the model's own plain indexes serves current reads over current rows only.

    With 100 versions per row, an index over every version makes a range scan on
    current rows read 100 entries per row it returns. So a non-unique index the
    model declares (``index=True`` or ``Index(...)``, without a WHERE of its own and
    not on the period columns) becomes partial, ``WHERE expired_at IS NULL``, under
    its own name, and gets a full twin ``<name>_history`` for as-of and history reads.
    """
    ours = {f"{table.name}_current", f"{table.name}_expired_at"}
    current = table.c[EXPIRED_AT].is_(None)
    for index in list(table.indexes):
        name = index.name if isinstance(index.name, str) else None
        options = dict(index.dialect_kwargs)
        if index.unique or name is None or name in ours or name.endswith(HISTORY) \
                or any(key.endswith("_where") and value is not None
                       for key, value in options.items()) \
                or any(c.name in _PERIOD for c in index.columns):
            continue
        Index(history_index_name(name), *index.expressions, **options)
        index.dialect_kwargs["postgresql_where"] = current
        index.dialect_kwargs["sqlite_where"] = current


HISTORY = "_history"


def history_index_name(name: str) -> str:
    """``<name>_history``, shortened with a digest past PostgreSQL's 63 bytes."""
    full = name + HISTORY
    if len(full.encode()) <= 63:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name.encode()[:46].decode(errors='ignore')}_{digest}{HISTORY}"


def current_index(name: str, columns: list[Column[Any]], current: Any) -> Index:
    """A unique index over current rows only (``current``: expired_at IS NULL)."""
    return Index(name, *columns, unique=True, postgresql_where=current, sqlite_where=current)


def _is_integer(column: Column[Any]) -> bool:
    affinity = column.type._type_affinity
    return affinity is not None and issubclass(affinity, Integer)

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

A model's own ``__mapper_args__`` and ``__table_args__`` (a key declared with
``PrimaryKeyConstraint`` included) merge with the mixin's. Single-table
subclasses share their parent's table; a joined-table subclass gets the period
columns as well and keeps its versions in step with its parent's: the mapper
joins the two tables on ``(key, created_at)``, and the unit of work writes a
version in every table of the object whenever it changes.
"""

from __future__ import annotations

import functools
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
    and_,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from temporal import _compat, hooks
from temporal.errors import UnsupportedError
from temporal.names import current_index_name, derived, expired_index_name
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
        if _parent_table(cls) is not None and not any(
                isinstance(a, Column) and a.name == CREATED_AT for a in args):
            # A joined-table subclass: its table keeps versions in step with its
            # parent's, so it gets the period columns too (declarative does not
            # copy a mixin's columns below the first mapped class).
            args = (*args, *period_columns())
        return temporal_table(name, metadata, args, kw, cls.__temporal_ttl__, cls.__name__)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return _temporal_mapper_args(cls, {})

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
        return _temporal_mapper_args(cls, given)

    __mapper_args__._temporal_merged = True  # type: ignore[attr-defined]
    return declared_attr.directive(__mapper_args__)


def _temporal_mapper_args(cls: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The mapper key is the entity key; a joined-table subclass joins its parent
    version by version: same key, same ``created_at``."""
    table = getattr(cls, "__table__", None)
    if not isinstance(table, Table) or not is_temporal_table(table):
        return given
    parent = _parent_table(cls)
    if parent is None or parent is table:
        given.setdefault("primary_key", list(key_columns(table)))
        return given
    given.setdefault("primary_key", list(key_columns(parent)))
    given.setdefault("inherit_condition", and_(
        *(mine == theirs for mine, theirs in zip(key_columns(table), key_columns(parent),
                                                 strict=True)),
        table.c[CREATED_AT] == parent.c[CREATED_AT]))
    properties = dict(given.get("properties", {}))
    for name in (CREATED_AT, EXPIRED_AT):
        properties.setdefault(name, [parent.c[name], table.c[name]])
    given["properties"] = properties
    return given


def _parent_table(cls: Any) -> Table | None:
    """The temporal table of the nearest mapped temporal class above ``cls``."""
    for base in cls.__mro__[1:]:
        table = base.__dict__.get("__table__")
        if isinstance(table, Table) and is_temporal_table(table):
            return table
    return None


def period_columns() -> tuple[Column[Any], Column[Any]]:
    """Fresh ``created_at`` / ``expired_at`` columns for a temporal table."""
    return (Column(CREATED_AT, UTCDateTime(), primary_key=True, autoincrement=False),
            Column(EXPIRED_AT, UTCDateTime(), nullable=True))


def temporal_table(name: str, metadata: MetaData, args: tuple[Any, ...], kw: dict[str, Any],
                   ttl: timedelta | None, owner: str) -> Table:
    """Build the physical table of a temporal model or association table."""
    hooks.install()  # the first temporal table: now the session listeners matter
    info = {**kw.pop("info", {}), TEMPORAL_INFO: True}
    if ttl is not None:
        if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
            raise TypeError(f"{owner}.__temporal_ttl__ must be a positive timedelta")
        info[TTL_INFO] = max(1, round(ttl.total_seconds()))
    table = Table(name, metadata, *_temporal_table_args(name, args), info=info, **kw)
    split_indexes(table)
    return table


@functools.cache
def versioned_tables(mapper: Any) -> tuple[Table, ...]:
    """The temporal tables an object of ``mapper`` lives in, base first: one, or
    one per level of a joined-table hierarchy."""
    out: list[Table] = []
    for level in reversed(list(mapper.iterate_to_root())):
        table = level.local_table
        if isinstance(table, Table) and is_temporal_table(table) and table not in out:
            out.append(table)
    return tuple(out)


def version_join(mapper: Any) -> Any:
    """The FROM of ``mapper``'s versions: its table, joined to each parent's on key and
    ``created_at`` for a joined-table subclass (a version is one row per level)."""
    tables = versioned_tables(mapper)
    own = tables[-1]
    source: Any = own
    for parent in reversed(tables[:-1]):
        source = source.join(parent, and_(
            *(mine == theirs for mine, theirs in zip(key_columns(own), key_columns(parent),
                                                     strict=True)),
            own.c[CREATED_AT] == parent.c[CREATED_AT]))
    return source


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
            and key[0].default is None and key[0].server_default is None \
            and not key[0].foreign_keys:
        # With created_at in the primary key the table key is composite, which
        # switches autoincrement off; the entity id still wants generating. An
        # identity column does it on PostgreSQL; on SQLite (which has no
        # identity columns) the writer hands out the next id itself.
        Identity()._set_parent_with_dispatch(key[0])

    out.append(current_index(current_index_name(name), key, current))
    out.append(Index(expired_index_name(name), expired_at,
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
    ours = {current_index_name(table.name), expired_index_name(table.name)}
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
    return derived(name, HISTORY)


def current_index(name: str, columns: list[Column[Any]], current: Any) -> Index:
    """A unique index over current rows only (``current``: expired_at IS NULL)."""
    return Index(name, *columns, unique=True, postgresql_where=current, sqlite_where=current)


def _is_integer(column: Column[Any]) -> bool:
    affinity = column.type._type_affinity
    return affinity is not None and issubclass(affinity, Integer)

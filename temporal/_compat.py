"""Every touch of private SQLAlchemy API lives here, small and tested.

* Identity lookups. ``Session.get`` and lazy many-to-one loads look in the
  identity map *before* any event runs, using no identity token. For an as-of
  read that would hand back the current object. Two thin wrappers route those
  lookups to the as-of slice: ``get(..., options=[as_of(t)])`` uses the slice of
  its option, and a lazy load from an as-of object stays in that object's slice
  (exactly what SQLAlchemy's horizontal-sharding session does by subclassing).
* Reading an ORM ``update()``'s SET clause, and whether it asks for RETURNING.
* Asking the mapper whether an object is an orphan, expiring attributes from
  inside a flush, and moving an object to the "deleted" state without the ORM
  emitting a DELETE (temporal expired its version instead).
* Telling interval and binary column types apart for export encodings (their
  common base classes are private).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.base import NO_VALUE as _NO_VALUE
from sqlalchemy.orm.base import instance_state
from sqlalchemy.orm.state import InstanceState

_installed = False
_originals: dict[str, Any] = {}


def route_identity_lookups(
    slice_of: Callable[[Sequence[Any]], Any], is_slice: Callable[[Any], bool]
) -> None:
    global _installed
    if _installed:
        return
    _installed = True
    get_impl = _originals["_get_impl"] = Session._get_impl
    identity_lookup = _originals["_identity_lookup"] = Session._identity_lookup

    def _get_impl(self: Session, *args: Any, **kw: Any) -> Any:
        if kw.get("identity_token") is None and kw.get("options"):
            token = slice_of(kw["options"])
            if token is not None:
                kw["identity_token"] = token
        return get_impl(self, *args, **kw)

    def _identity_lookup(self: Session, mapper: Any, primary_key_identity: Any,
                         identity_token: Any = None, *args: Any, **kw: Any) -> Any:
        origin = kw.get("lazy_loaded_from")
        if identity_token is None and origin is not None and is_slice(origin.identity_token):
            identity_token = origin.identity_token
        return identity_lookup(self, mapper, primary_key_identity, identity_token, *args, **kw)

    Session._get_impl = _get_impl  # type: ignore[method-assign]
    Session._identity_lookup = _identity_lookup  # type: ignore[method-assign]


def original_identity_lookups() -> dict[str, Any]:
    """SQLAlchemy's own ``Session._get_impl`` / ``_identity_lookup`` (for tests that
    pin the signatures the wrappers rely on)."""
    if not _installed:
        return {"_get_impl": Session._get_impl, "_identity_lookup": Session._identity_lookup}
    return dict(_originals)


def update_values(statement: Any) -> list[tuple[Any, Any]]:
    """The SET clause of an ``update()`` as (target, value) pairs, in order."""
    ordered = getattr(statement, "_ordered_values", None)
    if ordered:
        return list(ordered)
    return list((getattr(statement, "_values", None) or {}).items())


def has_returning(statement: Any) -> bool:
    return bool(getattr(statement, "_returning", ()))


def insert_has_values(statement: Any) -> bool:
    return bool(getattr(statement, "_values", None) or getattr(statement, "_multi_values", None))


def insert_is_from_select(statement: Any) -> bool:
    return getattr(statement, "select", None) is not None


def is_orphan(mapper: Mapper[Any], state: InstanceState[Any]) -> bool:
    return bool(mapper._is_orphan(state))


NO_VALUE = _NO_VALUE
"""The committed value of an attribute changed before it was ever loaded."""


def modified_attributes(state: InstanceState[Any]) -> list[tuple[str, Any]]:
    """(key, value before the change) of attributes changed since load.

    The ORM's own change bookkeeping; the old value is NO_VALUE when the
    attribute was set without being loaded first.
    """
    return list(state.committed_state.items())


def mark_deleted(session: Session, states: list[InstanceState[Any]]) -> None:
    """Move objects to the "deleted" state exactly as a flushed DELETE would.

    They leave the identity map, come back on rollback, detach on commit.
    """
    session._remove_newly_deleted(states)


def commit_values(state: InstanceState[Any], values: dict[str, Any]) -> None:
    """``set_committed_value`` for several scalar column attributes of one object at once:
    the values become the loaded state, with no pending change."""
    state.dict.update(values)
    state._commit(state.dict, list(values))


def forget_changes(state: InstanceState[Any], keys: list[str]) -> None:
    """Inside a flush (``before_update``): the ORM sees no change of ``keys`` to UPDATE.

    Their values stay as they are; the flush commits the object's whole state
    when it ends (or the rollback expires it), as it does for every object it wrote.
    """
    committed = state.committed_state
    for key in keys:
        committed.pop(key, None)


def expire_attributes(state: InstanceState[Any], keys: list[str]) -> None:
    state._expire_attributes(state.dict, keys)




def cache_key(statement: Any) -> Any:
    """The hashable part of a statement's SQL cache key (None: it has none).

    SQLAlchemy memoizes it on the statement and computes it for its compiled
    cache anyway, so asking here costs one lookup.
    """
    generate = getattr(statement, "_generate_cache_key", None)
    found = generate() if generate is not None else None
    return found.key if found is not None else None


def unindexed(column: Any) -> Any:
    """SQLite: ``+column``, the same value, which the query planner does not match to an
    index (its documented way to steer the choice of index)."""
    from sqlalchemy.sql import operators
    from sqlalchemy.sql.expression import UnaryExpression

    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def constraint_column_names(constraint: Any) -> list[str]:
    """Column names a table-level constraint was declared with, before it is attached."""
    return [getattr(c, "name", c) for c in constraint._pending_colargs]


# -- many-to-many through a temporal association table ----------------------------------

def _orm_class(module: Any, *names: str) -> Any:
    """A class SQLAlchemy 2.1 renamed with a leading underscore (2.0 spells it without)."""
    for name in names:
        found = getattr(module, name, None)
        if found is not None:
            return found
    raise ImportError(f"sqlalchemy.orm has none of {names}")  # pragma: no cover


def extend_secondary_joins(extend: Callable[[Any, Any, Any], Any]) -> None:
    """Let ``extend(secondary, primaryjoin, secondaryjoin)`` rewrite a relationship's
    secondary join as soon as the ORM has determined it.

    Every loading style (lazy, joined, selectin, subquery, ``join()``,
    ``any()``/``has()``, dynamic) builds on these two join conditions, so a
    criterion added here reaches them all.
    """
    from sqlalchemy.orm import relationships

    join_condition = _orm_class(relationships, "_JoinCondition", "JoinCondition")
    if getattr(join_condition, "_temporal_extended", False):
        return
    determine = join_condition._determine_joins

    def _determine_joins(self: Any) -> None:
        determine(self)
        if self.secondary is not None and self.secondaryjoin is not None:
            self.secondaryjoin = extend(self.secondary, self.primaryjoin, self.secondaryjoin)

    join_condition._determine_joins = _determine_joins
    join_condition._temporal_extended = True


def route_secondary_writes(
    owns: Callable[[Any], bool],
    write: Callable[[Any, Any, list[dict[str, Any]], list[dict[str, Any]],
                     list[dict[str, Any]]], None],
) -> None:
    """Hand the unit of work's association-row INSERTs and DELETEs for tables that
    ``owns`` accepts to ``write(connection, table, inserts, updates, deletes)``.

    The ORM has computed those rows (both sides of the relationship merged,
    deleted parents included); only the statements that apply them change.
    """
    from sqlalchemy.orm import dependency

    processor = _orm_class(dependency, "_ManyToManyDP", "ManyToManyDP")
    if getattr(processor, "_temporal_routed", False):
        return
    run_crud = processor._run_crud

    def _run_crud(self: Any, uowcommit: Any, inserts: Any, updates: Any, deletes: Any) -> None:
        if not owns(self.secondary):
            run_crud(self, uowcommit, inserts, updates, deletes)
            return
        connection = uowcommit.transaction.connection(self.mapper)
        write(connection, self.secondary, inserts, updates, deletes)

    processor._run_crud = _run_crud
    processor._temporal_routed = True


def scope_collection_reads(option_for: Callable[[InstanceState[Any]], Any]) -> None:
    """Dynamic (``lazy="dynamic"``) and write-only collections read with the
    loader option ``option_for(parent_state)`` returns (None: no option).

    Their queries are built from the parent's key alone, without the load
    options a lazy load carries, so an as-of parent would read the present.
    """
    from sqlalchemy.orm import dynamic, writeonly

    appender = _orm_class(dynamic, "_AppenderMixin", "AppenderMixin")
    if getattr(appender, "_temporal_scoped", False):
        return
    generate = appender._generate
    select_rows = writeonly.WriteOnlyCollection.select

    def _generate(self: Any, sess: Any = None) -> Any:
        query = generate(self, sess)
        option = option_for(instance_state(self.instance))
        return query if option is None else query.options(option)

    def select(self: Any) -> Any:
        statement = select_rows(self)
        option = option_for(instance_state(self.instance))
        return statement if option is None else statement.options(option)

    appender._generate = _generate
    appender._temporal_scoped = True
    writeonly.WriteOnlyCollection.select = select  # type: ignore[method-assign]


def is_interval_type(kind: Any) -> bool:
    """An interval type: the generic one or PostgreSQL's (a sibling, not a subclass)."""
    from sqlalchemy.sql import sqltypes

    return isinstance(kind, sqltypes._AbstractInterval)


def is_binary_type(kind: Any) -> bool:
    """A byte-string type (``LargeBinary``, ``BYTEA``, ``BLOB``, ``VARBINARY``...)."""
    from sqlalchemy.sql import sqltypes

    return isinstance(kind, sqltypes._Binary)

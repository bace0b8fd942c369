"""The ORM unit of work, versioned.

The ORM does the bookkeeping it is good at (dependency order, foreign keys
synced from relationships, defaults) and temporal takes over only the
statements for temporal tables:

* ``before_insert`` stamps the period (and hands out ids on SQLite);
* ``before_update`` records an object's net column changes and marks them
  committed, so the ORM emits no UPDATE of its own; the first
  ``after_update`` for that table writes the whole batch set-based through
  :func:`temporal.versioning.write_versions`;
* ``before_flush`` expires deleted objects (delete-orphans included) and moves
  them to the ORM's "deleted" state without the ORM issuing a DELETE; it also
  refuses changes to objects read as of the past.

An ORM object remembers which version it was loaded from (its ``created_at``);
only that version may be expired, so a change computed from stale data is a
:class:`~temporal.ConflictError`, never a silently lost update.
"""

from __future__ import annotations

import functools
import weakref
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Table, event
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.base import instance_state
from sqlalchemy.orm.state import InstanceState

from temporal import _compat, hooks
from temporal.association import changes_links, end_links
from temporal.errors import ConflictError, ReadOnlyError, UnsupportedError
from temporal.model import CREATED_AT, EXPIRED_AT, Temporal, is_temporal_table, versioned_tables
from temporal.query import is_slice_token
from temporal.versioning import (
    Key,
    expire_versions,
    needs_generated_id,
    next_id,
    note_explicit_id,
    pending_state,
    same_value,
    show_key,
    transaction_state,
    write_versions,
)


class _Change:
    """One object's net column changes for one of its tables, waiting for the batch."""

    __slots__ = ("in_step", "key", "read", "state", "values")

    def __init__(self, state: InstanceState[Any], key: Key, values: dict[str, Any],
                 read: datetime | None, in_step: bool = False) -> None:
        self.state = state
        self.key = key
        self.values = values  # column name -> new value
        self.read = read  # created_at of the version the object was loaded from
        # Joined-table inheritance: every table of the object gets a version at once,
        # changed or not, so its rows keep joining on (key, created_at).
        self.in_step = in_step


class _Shape:
    """What the per-object hooks need to know about a mapper, worked out once."""

    __slots__ = ("columns", "guarded", "onupdate", "tables")

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.tables = versioned_tables(mapper)
        # Attribute key -> column of one of the mapper's own temporal tables.
        self.columns: dict[str, Column[Any]] = {}
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            if isinstance(column, Column) and column.table in self.tables:
                self.columns[prop.key] = column
        # Attributes whose change _check_change refuses (or examines, for a merge).
        self.guarded = frozenset(
            key for key, column in self.columns.items()
            if column.name in (CREATED_AT, EXPIRED_AT) or column.primary_key)
        # Per table: (column, attribute key, is a SQL expression) of onupdate= defaults.
        self.onupdate = {
            table: [(c, mapper.get_property_by_column(c).key,
                     getattr(c.onupdate, "is_clause_element", False))
                    for c in table.c if c.onupdate is not None]
            for table in self.tables}


_shapes: weakref.WeakKeyDictionary[Mapper[Any], _Shape] = weakref.WeakKeyDictionary()


def _shape(mapper: Mapper[Any]) -> _Shape:
    found = _shapes.get(mapper)
    if found is None:
        found = _shapes[mapper] = _Shape(mapper)
    return found


def _refuse_slice(state: InstanceState[Any], doing: str) -> None:
    token: Any = state.key[2] if state.key is not None else None
    if is_slice_token(token):
        assert state.key is not None
        raise ReadOnlyError(
            f"cannot {doing} {state.class_.__name__} {show_key(state.key[1])}: it was read as of "
            f"{token.at.isoformat()}, and the past is read-only; load the current "
            "object (without as_of) to change it"
        )


@event.listens_for(Temporal, "before_insert", propagate=True)
def _before_insert(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    tx = transaction_state(connection)
    tables = versioned_tables(mapper)
    tx.written.update(tables)
    target.created_at = tx.stamp
    target.expired_at = None
    table = tables[0]  # the base table hands out ids
    generated = needs_generated_id(table, tx.dialect)
    if generated is not None:
        attr = mapper.get_property_by_column(generated).key
        value = getattr(target, attr)
        if value is None:
            setattr(target, attr, next_id(connection, table, tx))
        else:
            note_explicit_id(table, tx, value)


@event.listens_for(Temporal, "before_update", propagate=True, raw=True, retval=True)
def _before_update(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    # raw: the ORM hands over the InstanceState itself; this runs once per changed object.
    committed = _compat.modified_attributes(state)
    if not committed:
        return  # e.g. only a collection changed: nothing of this object's rows
    shape = _shape(mapper)
    columns = shape.columns
    new_values = state.dict
    changed: list[tuple[Column[Any], str, Any]] = []
    held = True  # every changed attribute holds its new value (none was deleted)
    for attr_key, old in committed:
        column = columns.get(attr_key)
        if column is None:
            continue
        if attr_key in new_values:
            new = new_values[attr_key]
        else:
            new, held = None, False
        if old is not _compat.NO_VALUE and same_value(old, new):
            continue
        changed.append((column, attr_key, new))
    if not changed:
        return
    _refuse_slice(state, "change")
    guarded = shape.guarded
    for column, attr_key, new in changed:
        if attr_key in guarded:
            _check_change(mapper, state, column, attr_key, dict(committed)[attr_key], new)
    # The ORM now sees nothing to UPDATE.
    if held:
        _compat.forget_changes(state, [attr_key for _, attr_key, _ in changed])
    else:  # an attribute deleted (``del obj.x``): it is written as NULL, and now holds it
        _compat.commit_values(state, {attr_key: new for _, attr_key, new in changed})
    assert state.key is not None
    tx = transaction_state(connection)
    read = new_values.get(CREATED_AT)  # the version these values were computed from
    tables = shape.tables
    key = state.key[1]
    if len(tables) == 1:
        tx.pending.setdefault(tables[0], []).append(
            _Change(state, key, {c.name: new for c, _, new in changed}, read))
        return
    for table in tables:  # joined-table inheritance: every table gets a version
        tx.pending.setdefault(table, []).append(_Change(
            state, key, {c.name: new for c, _, new in changed if c.table is table},
            read, in_step=True))


def _check_change(mapper: Mapper[Any], state: InstanceState[Any], column: Column[Any],
                  attr_key: str, old: Any, new: Any) -> None:
    """Refuse a change temporal cannot version (ConflictError for a stale merge); for the
    attributes ``_Shape.guarded`` names, on objects not read as of the past."""
    if column.name == CREATED_AT and isinstance(old, datetime) and \
            isinstance(new, datetime) and new < old:
        # session.merge() of an object read before a concurrent change: its
        # values were computed from a version that is no longer current.
        assert state.key is not None
        raise ConflictError(
            f"cannot change {mapper.class_.__name__} {show_key(state.key[1])}: the merged "
            f"object holds the version from {new.isoformat()}, but a concurrent "
            f"transaction wrote one from {old.isoformat()}; re-read it and retry"
        )
    if column.name in (CREATED_AT, EXPIRED_AT) or column.primary_key:
        raise UnsupportedError(
            f"{mapper.class_.__name__}.{attr_key} cannot be changed: "
            + ("temporal maintains the period columns"
               if column.name in (CREATED_AT, EXPIRED_AT) else
               "the key names the entity; delete it and insert a new one instead")
        )


@event.listens_for(Temporal, "after_update", propagate=True, raw=True, retval=True)
def _after_update(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    # Runs for every updated object; only the first of a flush finds a batch to write.
    tx = pending_state(connection)
    if tx is None or not tx.pending:
        return
    for table in _shape(mapper).tables:
        _write_batch(mapper, connection, table)


def _write_batch(mapper: Mapper[Any], connection: Connection, table: Table) -> None:
    tx = transaction_state(connection)
    batch = tx.pending.pop(table, None)
    if not batch:
        return
    read = {c.key: c.read for c in batch if c.read is not None}
    written = write_versions(connection, table, {c.key: c.values for c in batch}, tx, read,
                             in_step={c.key for c in batch if c.in_step})
    onupdate = _shape(mapper).onupdate[table]
    stamp = tx.stamp
    if not onupdate:
        for change in batch:
            if change.key in written:
                # The object is in this flush, which commits its whole state when it
                # ends (or expires it on rollback): setting the value is enough.
                change.state.dict[CREATED_AT] = stamp
        return
    period = {CREATED_AT: stamp}
    for change in batch:
        row = written.get(change.key)
        if row is None:
            continue
        if change.state.obj() is None:
            continue
        values = period
        expire = []
        for col, attr_key, is_sql in onupdate:
            if col.name not in change.values:
                if is_sql:
                    expire.append(attr_key)
                else:
                    values = {**values, attr_key: row[col.name]}
        _compat.commit_values(change.state, values)
        if expire:
            _compat.expire_attributes(change.state, expire)


@event.listens_for(Temporal, "before_delete", propagate=True)
def _before_delete(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    raise UnsupportedError(
        f"{mapper.class_.__name__} reached a plain DELETE during flush, which would destroy "
        "its history; delete temporal objects with session.delete()"
    )


@hooks.on(Session, "before_flush")
def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    dirty = list(session.dirty)
    for obj in dirty:
        state = instance_state(obj)
        key = state.key
        # (An object read in the present has no identity token: one test, no call.)
        if key is not None and key[2] is not None and is_slice_token(key[2]) and \
                (session.is_modified(obj, include_collections=False) or changes_links(obj)):
            _refuse_slice(state, "change")
    _promote_orphans(session, dirty)
    doomed: dict[Mapper[Any], list[InstanceState[Any]]] = defaultdict(list)
    for obj in session.deleted:
        state = instance_state(obj)
        _refuse_slice(state, "delete")
        if is_temporal_table(state.mapper.local_table):
            doomed[state.mapper].append(state)
    for mapper, states in doomed.items():
        conn = session.connection(bind_arguments={"mapper": mapper})
        tx = transaction_state(conn)
        read = {st.key[1]: st.dict[CREATED_AT] for st in states  # type: ignore[index]
                if CREATED_AT in st.dict}
        for table in versioned_tables(mapper):
            expire_versions(conn, table, [st.key[1] for st in states],  # type: ignore[index]
                            tx, read)
        end_links(conn, mapper, states)
    if doomed:
        # Only now: the SQL above needed every key, and from here the ORM treats
        # them as deleted (restored on rollback) without emitting a DELETE.
        _compat.mark_deleted(session, [state for states in doomed.values() for state in states])


@functools.cache
def _orphaning_relationships(mapper: Mapper[Any]) -> tuple[Any, ...]:
    return tuple(rel for rel in mapper.relationships
                 if rel.cascade.delete_orphan and is_temporal_table(rel.mapper.local_table))


def _promote_orphans(session: Session, dirty: list[Any]) -> None:
    """Turn temporal delete-orphans into deletes before the ORM would DELETE them."""
    for obj in dirty + list(session.new):
        parent = instance_state(obj)
        for rel in _orphaning_relationships(parent.mapper):
            history = parent.attrs[rel.key].history
            for child in history.deleted or ():
                state = instance_state(child)
                if (state.key is not None and child not in session.deleted
                        and _compat.is_orphan(rel.mapper, state)):
                    session.delete(child)


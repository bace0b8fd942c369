"""Versioned writes through the ORM unit of work.

Every change to a temporal object becomes history instead of an overwrite:

* **insert** adds the current version, ``created_at`` = the transaction's stamp;
* **update** expires the current version at the stamp and inserts the next one,
  carrying unchanged columns over from the database row (so columns that were
  never loaded are not lost);
* **delete** expires the current version. Nothing is ever removed, except a
  version this same transaction created: one transaction leaves at most one
  version per key, so a second change to such a version is made in place.

The ORM does the bookkeeping it is good at (dependency order, foreign keys
synced from relationships, defaults) and we take over only the statements.
``before_update`` records an object's net column changes and marks them
committed, so the ORM emits no UPDATE of its own; the first ``after_update``
for that table writes the whole batch set-based: one ``UPDATE ... RETURNING``
that expires the current versions (guarded by ``created_at < stamp``, so no
empty or negative period can ever be written) and one multi-row INSERT.
Deletes are handled in ``before_flush`` the same way, and the objects move to
the ORM's "deleted" state without the ORM issuing a DELETE.

An ORM object remembers which version it was loaded from (its ``created_at``),
and only that version may be expired: if another transaction replaced it in
the meantime, the object's values were computed from stale data, and a plain
table would silently lose that other update. Here it is a conflict.

A key the guarded UPDATE did not match is examined: a version this transaction
wrote is changed in place; a version that a concurrent transaction committed
with an older stamp (and that the change was not computed from) is expired on
the next pass; anything else means a concurrent writer got there first, and
:class:`~temporal.ConflictError` is raised (retryable). The flush fails, the
session rolls back, nothing half-done can be committed.
"""

from __future__ import annotations

import functools
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Table,
    and_,
    bindparam,
    column,
    delete,
    event,
    exc,
    func,
    insert,
    literal,
    null,
    select,
    tuple_,
    update,
)
from sqlalchemy import values as values_clause
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapper, Session, object_mapper
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.base import instance_state
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import ColumnElement

from temporal import _backend, _compat
from temporal.errors import ConflictError, ReadOnlyError, UnsupportedError
from temporal.model import CREATED_AT, EXPIRED_AT, Temporal, is_temporal_table, key_columns
from temporal.query import is_slice_token

Key = tuple[Any, ...]

# How many keys go into one IN (...) list: far below PostgreSQL's 65535 bind
# parameters and SQLite's 32766 variables, even for wide composite keys.
_CHUNK = 2000
# Passes over keys that a concurrent, older-stamped commit moved under us.
_PASSES = 20


# -- the transaction's stamp ------------------------------------------------


@dataclass
class _Tx:
    """What one database transaction knows about its temporal writes."""

    stamp: datetime
    dialect: str
    pending: dict[Table, list[_Change]] = field(default_factory=dict)
    next_id: dict[Table, int] = field(default_factory=dict)
    written: set[Table] = field(default_factory=set)  # tables this transaction versioned


_transactions: weakref.WeakKeyDictionary[Any, _Tx] = weakref.WeakKeyDictionary()


def transaction_state(conn: Connection) -> _Tx:
    """The stamp and scratch state of ``conn``'s current transaction (stamping on first use)."""
    root = conn.get_transaction()
    if root is None:
        conn.begin()  # autobegin, exactly as the first statement would
        root = conn.get_transaction()
    tx = _transactions.get(root)
    if tx is None:
        tx = _Tx(stamp=_backend.read_stamp(conn), dialect=_backend.dialect_name(conn))
        _transactions[root] = tx
    return tx


def transaction_time(session_or_connection: Session | Connection, model: Any = None) -> datetime:
    """The timestamp the current transaction stamps its versions with.

    Takes the stamp now if the transaction has not written yet. ``model``
    picks the bind in a session with several.
    """
    if isinstance(session_or_connection, Session):
        bind = {"mapper": model} if model is not None else None
        conn = session_or_connection.connection(bind_arguments=bind)
    else:
        conn = session_or_connection
    return transaction_state(conn).stamp


# -- the write core, shared by the unit of work and bulk statements ----------


def current(table: Table | Any) -> ColumnElement[bool]:
    expired_at: ColumnElement[Any] = table.c[EXPIRED_AT]
    return expired_at.is_(None)


def period_values(table: Table, expired_at: Any) -> dict[str, Any]:
    """SET clause for temporal's own UPDATEs: the period only.

    Core would otherwise apply ``onupdate=`` defaults and rewrite history.
    """
    keep = {c.name: c for c in table.c if c.onupdate is not None and c.name != EXPIRED_AT}
    return {**keep, EXPIRED_AT: expired_at}


def key_of(row: Any, table: Table) -> Key:
    return tuple(row[c.name] for c in key_columns(table))


def key_in(table: Table, keys: Sequence[Key]) -> ColumnElement[bool]:
    cols = key_columns(table)
    if len(cols) == 1:
        return cols[0].in_([k[0] for k in keys])
    return tuple_(*cols).in_(keys)


def matching(
    table: Table, keys: Sequence[Key], dialect: str
) -> Iterator[ColumnElement[bool]]:
    """Predicates selecting rows by key, a few per call.

    PostgreSQL gets one ``IN (SELECT ... FROM unnest(arrays))`` whatever the
    number of keys: two bind parameters, one cached plan, a hash join. SQLite
    gets plain ``IN`` lists in chunks below its variable limit.
    """
    cols = key_columns(table)
    if not keys:
        return
    if dialect == "postgresql":
        arrays = [bindparam(None, [k[i] for k in keys], type_=postgresql.ARRAY(c.type))
                  for i, c in enumerate(cols)]
        names = [f"k{i}" for i in range(len(cols))]
        source = func.unnest(*arrays).table_valued(*names).render_derived()
        if len(cols) == 1:
            yield cols[0].in_(select(source.c[names[0]]))
        else:
            yield tuple_(*cols).in_(select(*(source.c[n] for n in names)))
        return
    for chunk in _chunks(keys):
        if len(cols) == 1:
            yield cols[0].in_([k[0] for k in chunk])
        else:
            yield tuple_(*cols).in_(chunk)


def _insert_next_versions(
    conn: Connection, table: Table, olds: dict[Key, dict[str, Any]], tx: _Tx
) -> None:
    """Insert the next version of each key: its just-expired row with new values.

    Built in SQL (``INSERT ... SELECT`` from the expired rows joined with the
    new values), so columns that did not change never leave the database.
    Keys are grouped by the set of columns they change.
    """
    groups: dict[tuple[str, ...], list[Key]] = defaultdict(list)
    for key, changed in olds.items():
        groups[tuple(sorted(changed))].append(key)
    # Within one transaction a key has exactly one row that was current before
    # the stamp and expired at it: the one just expired.
    match = key_columns(table)
    for names, group in groups.items():
        columns = [*match, *(table.c[n] for n in names)]
        rows = [(*key, *(olds[key][n] for n in names)) for key in group]
        for source in _row_sources(columns, rows, tx.dialect):
            new_value = {n: source.c[f"s{len(match) + i}"] for i, n in enumerate(names)}
            chosen: list[Any] = []
            for col in table.c:
                if col.name == CREATED_AT:
                    chosen.append(literal(tx.stamp, col.type))
                elif col.name == EXPIRED_AT:
                    chosen.append(null())
                else:
                    chosen.append(new_value.get(col.name, col))
            on = and_(*(c == source.c[f"s{i}"] for i, c in enumerate(match)))
            rows_from = select(*chosen).select_from(table.join(source, on)).where(
                table.c[EXPIRED_AT] == tx.stamp, table.c[CREATED_AT] < tx.stamp)
            execute(conn, insert(table).from_select([c.name for c in table.c], rows_from))


def _row_sources(
    columns: list[Column[Any]], rows: list[tuple[Any, ...]], dialect: str
) -> Iterator[Any]:
    """``rows`` as a FROM-able source with columns s0, s1, ... typed like ``columns``.

    PostgreSQL: one ``unnest`` of one array per column (a bind per column, one
    cached plan); array-typed columns (which unnest would flatten) and SQLite
    get ``VALUES`` lists, in chunks below the bind-parameter limits.
    """
    names = [f"s{i}" for i in range(len(columns))]
    if dialect == "postgresql" and not any(isinstance(c.type, sqltypes.ARRAY) for c in columns):
        arrays = [bindparam(None, [r[i] for r in rows], type_=postgresql.ARRAY(c.type))
                  for i, c in enumerate(columns)]
        yield func.unnest(*arrays).table_valued(*names).render_derived(name="temporal_next")
        return
    per_chunk = max(1, 30000 // len(columns))
    for i in range(0, len(rows), per_chunk):
        # A CTE, because SQLite cannot name the columns of a VALUES alias.
        yield values_clause(*(column(n, c.type) for n, c in zip(names, columns, strict=True)),
                            name="temporal_next").data(rows[i : i + per_chunk]).cte()


def _chunks(items: Sequence[Key]) -> Iterator[Sequence[Key]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def execute(conn: Connection, statement: Any, params: Any = None) -> Any:
    """Execute, turning deadlocks and serialization failures into ConflictError."""
    try:
        return conn.execute(statement, params)
    except exc.DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) in ("40001", "40P01"):
            raise ConflictError(
                f"a concurrent transaction holds the same rows ({error.orig}); "
                "roll back and retry"
            ) from error
        raise


def write_versions(
    conn: Connection, table: Table, changes: dict[Key, dict[str, Any]], tx: _Tx,
    read: dict[Key, datetime] | None = None,
) -> dict[Key, dict[str, Any]]:
    """Apply ``{key: {column: new value}}`` as new versions; return the rows written.

    ``read`` names, per key, the version the new values were computed from
    (the ``created_at`` of a loaded ORM object): only that version may be
    expired, anything else is a concurrent change and raises ConflictError.
    A change that turns out to change nothing (its old value was never loaded,
    and equals the new one) writes nothing and is left out of the result.
    """
    read = read or {}
    remaining = dict(changes)
    written: dict[Key, dict[str, Any]] = {}
    changed_names = sorted({name for values in changes.values() for name in values})
    onupdate = [c for c in table.c if c.onupdate is not None]
    for _ in range(_PASSES):
        old_rows = _expire(conn, table, list(remaining), tx, read,
                           returning=[table.c[n] for n in changed_names])
        fresh: dict[Key, dict[str, Any]] = {}
        unchanged = []
        for key, old in old_rows.items():
            values = remaining.pop(key)
            if all(_same(old[name], value) for name, value in values.items()):
                unchanged.append((*key, old[CREATED_AT]))
                continue
            if onupdate:
                values = {**values, **_onupdate_values(onupdate, values)}
            fresh[key] = values
            written[key] = values
        if unchanged:
            _restore(conn, table, unchanged, tx)
        if fresh:
            _insert_next_versions(conn, table, fresh, tx)
        if not remaining:
            return written
        retry = _diagnose(conn, table, remaining, tx, "update", read)
        in_place = {k: {**v, **_onupdate_values(onupdate, v)}
                    for k, v in remaining.items() if k not in retry}
        if in_place:
            written.update(_update_in_place(conn, table, in_place, tx))
        remaining = {k: remaining[k] for k in retry}
        if not remaining:
            return written
    raise ConflictError(f"{table.name}: rows kept changing under this transaction; retry")


def expire_versions(
    conn: Connection, table: Table, keys: Iterable[Key], tx: _Tx,
    read: dict[Key, datetime] | None = None,
) -> None:
    """Delete: expire the current versions of ``keys`` (removing this transaction's own)."""
    read = read or {}
    remaining = list(keys)
    for _ in range(_PASSES):
        expired = _expire(conn, table, remaining, tx, read)
        left: dict[Key, Any] = {k: {} for k in remaining if k not in expired}
        if not left:
            return
        retry = _diagnose(conn, table, left, tx, "delete", read)
        own = [k for k in left if k not in retry]
        for selection in matching(table, own, tx.dialect):
            execute(conn, delete(table).where(selection, current(table),
                                              table.c[CREATED_AT] == tx.stamp))
        remaining = list(retry)
        if not remaining:
            return
    raise ConflictError(f"{table.name}: rows kept changing under this transaction; retry")


def _expire(
    conn: Connection, table: Table, keys: Sequence[Key], tx: _Tx, read: dict[Key, datetime],
    *, returning: Sequence[Column[Any]] = (),
) -> dict[Key, dict[str, Any]]:
    """Expire the current versions of ``keys``; each must be the version ``read`` names, if any.

    Returns, per expired key, its ``created_at`` and the ``returning`` columns.
    ``read`` is only given by the unit of work, whose flush rolls back on error.
    """
    returned = [*key_columns(table), table.c[CREATED_AT], *returning]
    tx.written.add(table)
    rows: dict[Key, dict[str, Any]] = {}
    for selection in matching(table, keys, tx.dialect):
        stmt = (
            update(table)
            .where(selection, current(table), table.c[CREATED_AT] < tx.stamp)
            .values(period_values(table, tx.stamp))
            .returning(*returned)
        )
        for row in execute(conn, stmt).mappings():
            rows[key_of(row, table)] = dict(row)
    for key, row in rows.items():
        # Checked after the fact: raising here fails the flush, which rolls
        # back everything it wrote, this UPDATE included.
        if key in read and row[CREATED_AT] != read[key]:
            raise ConflictError(
                f"cannot change {table.name} {_show(key)}: it changed since it was read "
                f"(read the version from {read[key].isoformat()}, a concurrent transaction "
                f"wrote one from {row[CREATED_AT].isoformat()}); roll back and retry"
            )
    return rows


def _diagnose(
    conn: Connection, table: Table, keys: dict[Key, Any], tx: _Tx, action: str,
    read: dict[Key, datetime],
) -> set[Key]:
    """Sort out keys the guarded expire missed; return those worth another pass.

    Keys whose current version this transaction wrote are left for the caller
    to change in place; anything else raises ConflictError.
    """
    mine = _backend.written_here(table, tx.stamp, tx.dialect).label("mine")
    found: dict[Key, tuple[datetime, bool]] = {}
    for selection in matching(table, list(keys), tx.dialect):
        stmt = select(*key_columns(table), table.c[CREATED_AT], mine).where(
            selection, current(table)
        )
        for row in execute(conn, stmt).mappings():
            found[key_of(row, table)] = (row[CREATED_AT], bool(row["mine"]))
    retry: set[Key] = set()
    for key in keys:
        if key not in found:
            raise ConflictError(
                f"cannot {action} {table.name} {_show(key)}: it has no current version any "
                "more (a concurrent transaction deleted it); roll back and retry"
            )
        created_at, is_mine = found[key]
        if is_mine:
            continue
        if key in read:
            raise ConflictError(
                f"cannot {action} {table.name} {_show(key)}: it changed since it was read "
                f"(read the version from {read[key].isoformat()}, a concurrent transaction "
                f"wrote one from {created_at.isoformat()}); roll back and retry"
            )
        if created_at < tx.stamp:
            retry.add(key)  # replaced by an older-stamped commit during our statement
            continue
        raise ConflictError(
            f"cannot {action} {table.name} {_show(key)}: a concurrent transaction wrote a "
            f"version starting {created_at.isoformat()}, after this transaction's "
            f"timestamp {tx.stamp.isoformat()}; roll back and retry"
        )
    return retry


def _update_in_place(
    conn: Connection, table: Table, changes: dict[Key, dict[str, Any]], tx: _Tx
) -> dict[Key, dict[str, Any]]:
    """Change versions this transaction created (one version per key per transaction)."""
    groups: dict[tuple[str, ...], list[Key]] = defaultdict(list)
    for key, values in changes.items():
        groups[tuple(sorted(values))].append(key)
    cols = key_columns(table)
    for names, keys in groups.items():
        stmt = (
            update(table)
            .where(*(c == bindparam(f"k_{c.name}") for c in cols), current(table),
                   table.c[CREATED_AT] == tx.stamp)
            .values({n: bindparam(f"v_{n}") for n in names})
        )
        params = [
            {**{f"k_{c.name}": v for c, v in zip(cols, key, strict=True)},
             **{f"v_{n}": changes[key][n] for n in names}}
            for key in keys
        ]
        execute(conn, stmt, params)
    return {key: {**values, CREATED_AT: tx.stamp} for key, values in changes.items()}


def _restore(conn: Connection, table: Table, versions: list[tuple[Any, ...]], tx: _Tx) -> None:
    """Un-expire versions whose 'change' turned out to change nothing."""
    cols = [*key_columns(table), table.c[CREATED_AT]]
    for chunk in _chunks(versions):
        execute(conn, update(table)
                .where(tuple_(*cols).in_(chunk), table.c[EXPIRED_AT] == tx.stamp)
                .values(period_values(table, None)))


def _onupdate_values(columns: list[Column[Any]], changed: dict[str, Any]) -> dict[str, Any]:
    """Values of ``onupdate=`` defaults for columns the change did not set."""
    out: dict[str, Any] = {}
    for col in columns:
        default = col.onupdate
        if default is None or col.name in changed:
            continue
        arg = getattr(default, "arg", None)
        if getattr(default, "is_callable", False):
            out[col.name] = arg(None)  # type: ignore[misc]
        elif getattr(default, "is_clause_element", False):
            out[col.name] = arg
        else:
            out[col.name] = arg
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # values that refuse comparison are treated as changed
        return False


def _show(key: Key) -> str:
    return repr(key[0]) if len(key) == 1 else repr(key)


# -- new entities on SQLite: handing out ids ------------------------------------


def next_id(conn: Connection, table: Table, tx: _Tx) -> int:
    """Next entity id for an identity key on SQLite (which has no identity columns).

    Serialized by SQLite's write lock, which the stamp already holds.
    """
    column = key_columns(table)[0]
    if table not in tx.next_id:
        tx.next_id[table] = conn.execute(select(func.coalesce(func.max(column), 0))).scalar_one()
    tx.next_id[table] += 1
    return tx.next_id[table]


def needs_generated_id(table: Table, dialect: str) -> Column[Any] | None:
    keys = key_columns(table)
    if dialect == "sqlite" and len(keys) == 1 and keys[0].identity is not None:
        return keys[0]
    return None


def note_explicit_id(table: Table, tx: _Tx, value: Any) -> None:
    if table in tx.next_id and isinstance(value, int) and value > tx.next_id[table]:
        tx.next_id[table] = value


# -- the unit of work --------------------------------------------------------


@dataclass
class _Change:
    state: InstanceState[Any]
    key: Key
    values: dict[str, Any]  # column name -> new value
    attrs: dict[str, str]  # column name -> attribute key
    read: datetime | None  # created_at of the version the object was loaded from


def _refuse_slice(state: InstanceState[Any], doing: str) -> None:
    token: Any = state.key[2] if state.key is not None else None
    if is_slice_token(token):
        assert state.key is not None
        raise ReadOnlyError(
            f"cannot {doing} {state.class_.__name__} {_show(state.key[1])}: it was read as of "
            f"{token.at.isoformat()}, and the past is read-only; load the current "
            "object (without as_of) to change it"
        )


@event.listens_for(Temporal, "before_insert", propagate=True)
def _before_insert(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    tx = transaction_state(connection)
    table = mapper.local_table
    assert isinstance(table, Table)
    tx.written.add(table)
    target.created_at = tx.stamp
    target.expired_at = None
    generated = needs_generated_id(table, tx.dialect)
    if generated is not None:
        attr = mapper.get_property_by_column(generated).key
        value = getattr(target, attr)
        if value is None:
            setattr(target, attr, next_id(connection, table, tx))
        else:
            note_explicit_id(table, tx, value)


@event.listens_for(Temporal, "before_update", propagate=True)
def _before_update(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    state = instance_state(target)
    table = mapper.local_table
    assert isinstance(table, Table)
    columns = _writable_columns(mapper)
    values: dict[str, Any] = {}
    attrs: dict[str, str] = {}
    for attr_key, old in _compat.modified_attributes(state):
        column = columns.get(attr_key)
        if column is None:
            continue
        new = state.dict.get(attr_key)
        if old is not _compat.NO_VALUE and _same(old, new):
            continue
        _refuse_slice(state, "change")
        if column.name in (CREATED_AT, EXPIRED_AT) or column.primary_key:
            raise UnsupportedError(
                f"{mapper.class_.__name__}.{attr_key} cannot be changed: "
                + ("temporal maintains the period columns"
                   if column.name in (CREATED_AT, EXPIRED_AT) else
                   "the key names the entity; delete it and insert a new one instead")
            )
        values[column.name] = new
        attrs[column.name] = attr_key
    if not values:
        return
    for name, attr in attrs.items():
        set_committed_value(target, attr, values[name])  # the ORM now sees nothing to UPDATE
    assert state.key is not None
    tx = transaction_state(connection)
    read = state.dict.get(CREATED_AT)  # the version these values were computed from
    tx.pending.setdefault(table, []).append(_Change(state, state.key[1], values, attrs, read))


@event.listens_for(Temporal, "after_update", propagate=True)
def _after_update(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    table = mapper.local_table
    tx = transaction_state(connection)
    batch = tx.pending.pop(table, None)  # type: ignore[call-overload]
    if not batch:
        return
    assert isinstance(table, Table)
    by_key = {c.key: c for c in batch}
    read = {c.key: c.read for c in batch if c.read is not None}
    written = write_versions(connection, table, {c.key: c.values for c in batch}, tx, read)
    onupdate = [c for c in table.c if c.onupdate is not None]
    for key, change in by_key.items():
        row = written.get(key)
        if row is None:
            continue
        obj = change.state.obj()
        if obj is None:
            continue
        set_committed_value(obj, CREATED_AT, tx.stamp)
        for col in onupdate:
            if col.name not in change.values:
                prop = mapper.get_property_by_column(col)
                if getattr(col.onupdate, "is_clause_element", False):
                    _compat.expire_attributes(change.state, [prop.key])
                else:
                    set_committed_value(obj, prop.key, row[col.name])


@event.listens_for(Temporal, "before_delete", propagate=True)
def _before_delete(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    raise UnsupportedError(
        f"{mapper.class_.__name__} reached a plain DELETE during flush, which would destroy "
        "its history; delete temporal objects with session.delete()"
    )


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    for obj in session.dirty:
        state = instance_state(obj)
        if state.key is not None and is_slice_token(state.key[2]) and \
                session.is_modified(obj, include_collections=False):
            _refuse_slice(state, "change")
    _promote_orphans(session)
    doomed: dict[Mapper[Any], list[Any]] = defaultdict(list)
    for obj in session.deleted:
        state = instance_state(obj)
        _refuse_slice(state, "delete")
        mapper = object_mapper(obj)
        if is_temporal_table(mapper.local_table):
            doomed[mapper].append(obj)
    for mapper, objs in doomed.items():
        conn = session.connection(bind_arguments={"mapper": mapper})
        tx = transaction_state(conn)
        table = mapper.local_table
        assert isinstance(table, Table)
        states = [instance_state(o) for o in objs]
        read = {st.key[1]: st.dict[CREATED_AT] for st in states  # type: ignore[index]
                if CREATED_AT in st.dict}
        expire_versions(conn, table, [st.key[1] for st in states], tx, read)  # type: ignore[index]
    # Only now: the SQL above needed every key, and from here the ORM treats
    # them as deleted (restored on rollback) without emitting a DELETE.
    _compat.mark_deleted(session, [instance_state(o) for objs in doomed.values() for o in objs])


@functools.cache
def _writable_columns(mapper: Mapper[Any]) -> dict[str, Column[Any]]:
    """Attribute key -> column of the mapper's own table."""
    out = {}
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if isinstance(column, Column) and column.table is mapper.local_table:
            out[prop.key] = column
    return out


@functools.cache
def _orphaning_relationships(mapper: Mapper[Any]) -> tuple[Any, ...]:
    return tuple(rel for rel in mapper.relationships
                 if rel.cascade.delete_orphan and is_temporal_table(rel.mapper.local_table))


def _promote_orphans(session: Session) -> None:
    """Turn temporal delete-orphans into deletes before the ORM would DELETE them."""
    for obj in list(session.dirty) + list(session.new):
        for rel in _orphaning_relationships(object_mapper(obj)):
            history = instance_state(obj).attrs[rel.key].history
            for child in history.deleted or ():
                state = instance_state(child)
                if (state.key is not None and child not in session.deleted
                        and _compat.is_orphan(rel.mapper, state)):
                    session.delete(child)


__all__ = ["transaction_time"]

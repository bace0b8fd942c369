"""ORM-enabled ``insert()``, ``update()`` and ``delete()`` on temporal models.

``session.execute(update(Customer).where(...).values(...))`` is rewritten into
a few set-based statements, whatever the number of rows:

* **PostgreSQL** - one statement: a data-modifying CTE expires the matching
  current versions and feeds them to an ``INSERT ... SELECT`` that writes the
  next versions, with SET expressions evaluated against the old row.
* **SQLite** (no data-modifying CTEs) - the next versions are first inserted
  as placeholders whose period is the empty ``[stamp, stamp)`` (no real
  version ever has one), then the old versions are expired, then the
  placeholders become current.

Rows this transaction already versioned are changed in place, and on
PostgreSQL a last SELECT checks that no matching row was replaced by a
concurrent transaction while the statement ran: a row replaced by an older
stamp gets another pass, one replaced by a younger stamp raises ConflictError.
``delete()`` expires instead of deleting; ``insert()`` gets its period columns
filled in. UPDATE ... RETURNING and INSERT ... FROM SELECT are refused rather
than silently mis-versioned.

Afterwards, objects of that model in the session are expired (updates) or
moved to the "deleted" state (deletes; restored on rollback), as SQLAlchemy's
own bulk statements do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Result,
    Table,
    and_,
    delete,
    insert,
    literal,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.engine import IteratorResult
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.orm import InstrumentedAttribute, Mapper, ORMExecuteState, Session
from sqlalchemy.orm.base import instance_state
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.util import ClauseAdapter

from temporal import _backend, _compat, hooks
from temporal.errors import ConflictError, UnsupportedError
from temporal.model import (
    CREATED_AT,
    EXPIRED_AT,
    is_temporal_table,
    key_columns,
    version_join,
    versioned_tables,
)
from temporal.query import is_slice_token, read_in_time
from temporal.versioning import (
    _PASSES,
    _Tx,
    current,
    execute,
    expire_versions,
    key_of,
    needs_generated_id,
    next_id,
    next_version,
    note_explicit_id,
    onupdate_values,
    period_values,
    transaction_state,
    write_versions,
)


@hooks.on(Session, "do_orm_execute")
def _on_orm_execute(state: ORMExecuteState) -> Result[Any] | None:
    """The one ``do_orm_execute`` listener: a second would cost every statement of
    every session, plain models' included, another call."""
    if state.is_select:
        return read_in_time(state)
    if not (state.is_insert or state.is_update or state.is_delete):
        return None
    return _rewrite_dml(state)


def _rewrite_dml(state: ORMExecuteState) -> Result[Any] | None:
    mapper = state.bind_mapper
    if mapper is None or not is_temporal_table(mapper.local_table):
        return None
    table = mapper.local_table
    assert isinstance(table, Table)
    joined = len(versioned_tables(mapper)) > 1
    if joined and state.is_insert:
        raise UnsupportedError(
            f"bulk insert() of {mapper.class_.__name__}, a joined-table subclass, is not "
            "supported: its versions span several tables; add the objects to the session")
    if state.session.autoflush and state.execution_options.get("autoflush", True):
        # As SQLAlchemy does before its own bulk statements: the statement must see
        # (and act on) pending changes, or they would be lost or survive a delete.
        state.session.flush()
    conn = state.session.connection(bind_arguments={"mapper": mapper})
    tx = transaction_state(conn)
    if joined:
        if _compat.has_returning(state.statement):
            raise UnsupportedError(
                f"RETURNING is not supported on update()/delete() of temporal model "
                f"{mapper.class_.__name__}; select the rows afterwards instead")
        return _joined_statement(state, conn, mapper, tx)
    if state.is_insert:
        _prepare_insert(state, conn, table, mapper, tx)
        return None
    if _compat.has_returning(state.statement):
        raise UnsupportedError(
            f"RETURNING is not supported on update()/delete() of temporal model "
            f"{mapper.class_.__name__}; select the rows afterwards instead"
        )
    params = state.parameters
    if state.is_update and isinstance(params, list) and params:
        return _update_by_key(state.session, conn, table, mapper, params, tx)
    where = state.statement.whereclause  # type: ignore[attr-defined]
    where = where if where is not None else true()
    if state.is_update:
        values = _set_clause(state.statement, table, mapper)
        count = _update_where(conn, table, where, values, tx)
        _expire_in_session(state.session, mapper, [table.c[n] for n in values])
    else:
        held = _current_states(state.session, mapper)
        count, gone = _delete_where(conn, table, where, tx, keyed=bool(held))
        _forget_in_session(state.session, held, gone)
    return _counted(count)


# -- insert -------------------------------------------------------------------


def _prepare_insert(
    state: ORMExecuteState, conn: Connection, table: Table, mapper: Mapper[Any], tx: _Tx
) -> None:
    statement = state.statement
    if _compat.insert_is_from_select(statement):
        raise UnsupportedError(
            f"insert().from_select() into temporal model {mapper.class_.__name__} is not "
            "supported; insert the rows as parameters instead"
        )
    period = {CREATED_AT: tx.stamp, EXPIRED_AT: None}
    tx.written.add(table)
    generated = needs_generated_id(table, tx.dialect)
    id_attr = mapper.get_property_by_column(generated).key if generated is not None else None

    def complete(row: dict[str, Any]) -> dict[str, Any]:
        row = {**row, **period}
        if id_attr is not None:
            if row.get(id_attr) is None:
                row[id_attr] = next_id(conn, table, tx)
            else:
                note_explicit_id(table, tx, row[id_attr])
        return row

    params: Any = state.parameters
    if isinstance(params, list) and params:
        state.parameters = [complete(dict(p)) for p in params]
    elif _compat.insert_has_values(statement):
        if getattr(statement, "_multi_values", None):
            raise UnsupportedError(
                "multi-row insert().values([...]) into a temporal model is not supported; "
                "pass the rows as parameters: session.execute(insert(Model), rows)"
            )
        given = _values_keys(statement)
        if id_attr is not None and id_attr in given:
            tx.next_id.pop(table, None)  # an explicit id: re-read the highest before the next
            extra = dict(period)
        else:
            extra = complete({})
        state.statement = statement.values(**extra)  # type: ignore[attr-defined]
    else:
        state.parameters = complete(dict(params or {}))


def _values_keys(statement: Any) -> set[str]:
    return {getattr(k, "key", k) for k, _ in _compat.update_values(statement)}


# -- update ---------------------------------------------------------------------


def _update_by_key(
    session: Session, conn: Connection, table: Table, mapper: Mapper[Any],
    params: list[dict[str, Any]], tx: _Tx,
) -> Result[Any]:
    """``session.execute(update(Model), [{"id": 1, "name": ...}, ...])``."""
    pk_attrs = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
    changes: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in params:
        try:
            key = tuple(row[a] for a in pk_attrs)
        except KeyError:
            raise UnsupportedError(
                f"bulk update of {mapper.class_.__name__} needs the key ({', '.join(pk_attrs)}) "
                "in every parameter set"
            ) from None
        values = {}
        for attr, value in row.items():
            if attr in pk_attrs:
                continue
            column = _column_for(attr, table, mapper)
            values[column.name] = value
        changes.setdefault(key, {}).update(values)
    written = write_versions(conn, table, changes, tx)
    changed = {name for values in changes.values() for name in values}
    _expire_in_session(session, mapper, [table.c[n] for n in changed])
    return _counted(len(written))


def _set_clause(statement: Any, table: Table, mapper: Mapper[Any]) -> dict[str, Any]:
    return {column.name: value for column, value in _set_targets(statement, (table,), mapper)}


def _set_targets(statement: Any, tables: tuple[Table, ...], mapper: Mapper[Any]
                 ) -> list[tuple[Column[Any], Any]]:
    """The SET clause as (column, typed value) pairs; ``tables``: the model's levels."""
    targets: list[tuple[Column[Any], Any]] = []
    for target, value in _compat.update_values(statement):
        column = target if isinstance(target, Column) and target.table in tables \
            else _column_for(target, tables[-1], mapper)  # a column of any level
        if column.primary_key or column.name in (CREATED_AT, EXPIRED_AT):
            raise UnsupportedError(
                f"update() cannot set {mapper.class_.__name__}.{column.name}: "
                + ("temporal maintains the period columns" if not column.primary_key
                   else "the key names the entity; delete and insert instead")
            )
        targets.append((column, _as_expression(value, column)))
    if not targets:
        raise UnsupportedError("update() of a temporal model needs values to set")
    return targets


def _column_for(target: Any, table: Table, mapper: Mapper[Any]) -> Column[Any]:
    if isinstance(target, InstrumentedAttribute):
        target = target.key
    if isinstance(target, str):
        if target in mapper.attrs:
            column = mapper.attrs[target].columns[0]
        elif target in table.c:
            column = table.c[target]
        else:
            raise UnsupportedError(f"{mapper.class_.__name__} has no column {target!r}")
    else:
        column = table.c[target.name]
    assert isinstance(column, Column)
    return column


def _update_where(
    conn: Connection, table: Table, where: ColumnElement[bool], values: dict[str, Any], tx: _Tx
) -> int:
    count = 0
    values = {**values, **{n: _as_expression(v, table.c[n])
                           for n, v in onupdate_values(table, values).items()}}
    if table in tx.written:  # only then can versions of this transaction be among the rows
        mine = _backend.written_here(table, tx.stamp, tx.dialect)
        count = execute(conn, update(table).where(where, current(table), mine)
                        .values(values)).rowcount
    tx.written.add(table)
    for _ in range(_PASSES):
        if tx.dialect == "postgresql":
            count += _next_versions_postgresql(conn, table, where, values, tx)
            if not _leftovers(conn, table, where, tx):
                return count
        else:
            return count + _next_versions_sqlite(conn, table, where, values, tx)
    raise ConflictError(f"{table.name}: rows kept changing under this update; retry")


def _next_versions_postgresql(
    conn: Connection, table: Table, where: ColumnElement[bool], values: dict[str, Any], tx: _Tx
) -> int:
    old = (
        update(table)
        .where(where, current(table), table.c[CREATED_AT] < tx.stamp)
        .values(period_values(table, tx.stamp))
        .returning(*table.c)
        .cte("temporal_old")
    )
    adapt = ClauseAdapter(old).traverse
    new = {name: _as_expression(adapt(value), table.c[name]) for name, value in values.items()}
    chosen = next_version(table, tx.stamp, new, lambda col: old.c[col.name])
    stmt = (insert(table).from_select([c.name for c in table.c], select(*chosen)).add_cte(old)
            .execution_options(preserve_rowcount=True))
    count: int = execute(conn, stmt).rowcount
    return count


def _next_versions_sqlite(
    conn: Connection, table: Table, where: ColumnElement[bool], values: dict[str, Any], tx: _Tx
) -> int:
    stamp = tx.stamp
    chosen: list[Any] = []
    for col in table.c:
        if col.name in (CREATED_AT, EXPIRED_AT):
            chosen.append(literal(stamp, col.type))  # the placeholder period [stamp, stamp)
        elif col.name in values:
            chosen.append(_as_expression(values[col.name], col))
        else:
            chosen.append(col)
    source = select(*chosen).where(where, current(table), table.c[CREATED_AT] < stamp)
    count = execute(conn, insert(table).from_select([c.name for c in table.c], source)
                    .execution_options(preserve_rowcount=True)).rowcount
    keys = key_columns(table)
    placeholders = and_(table.c[CREATED_AT] == stamp, table.c[EXPIRED_AT] == stamp)
    replaced = select(*keys).where(placeholders)
    execute(conn, update(table)
            .where(tuple_(*keys).in_(replaced), current(table), table.c[CREATED_AT] < stamp)
            .values(period_values(table, stamp)))
    execute(conn, update(table).where(placeholders).values(period_values(table, None)))
    return int(count)


def _as_expression(value: Any, column: Column[Any]) -> Any:
    """A SET value as SQL typed like its column (TypeDecorators, JSON, Enum bind as
    they would in a plain UPDATE), SQL expressions as they are."""
    if isinstance(value, BindParameter) and value.type._isnull:
        # update().values(x=...) leaves its binds untyped until compiled against the
        # column; taken out of the statement, they must get the column's type here.
        return literal(value.effective_value, column.type)
    if hasattr(value, "__clause_element__") or isinstance(value, ColumnElement):
        return value
    return literal(value, column.type)


def _leftovers(conn: Connection, table: Table, where: ColumnElement[bool], tx: _Tx) -> bool:
    """PostgreSQL: did a concurrent commit leave matching rows unversioned?

    True means another pass is needed (rows replaced by an older stamp while
    the statement ran); a row replaced by a younger stamp raises ConflictError.
    """
    # Stamps are unique among transactions in flight, so "not mine" is "another stamp".
    row = execute(conn, select(*key_columns(table), table.c[CREATED_AT])
                  .where(where, current(table), table.c[CREATED_AT] != tx.stamp)
                  .limit(1)).mappings().first()
    if row is None:
        return False
    if row[CREATED_AT] < tx.stamp:
        return True
    raise ConflictError(
        f"cannot change {table.name} {key_of(row, table)!r}: a concurrent transaction wrote "
        f"a version starting {row[CREATED_AT].isoformat()}, after this transaction's "
        f"timestamp {tx.stamp.isoformat()}; roll back and retry"
    )


# -- delete ---------------------------------------------------------------------


def _delete_where(
    conn: Connection, table: Table, where: ColumnElement[bool], tx: _Tx, keyed: bool
) -> tuple[int, set[tuple[Any, ...]]]:
    """Expire the matching current rows (delete this transaction's own); the count,
    and the keys that went when ``keyed`` (the session holds objects to forget:
    otherwise no key travels back, which for 50k rows costs more than the UPDATE)."""
    keys = key_columns(table)
    gone: set[tuple[Any, ...]] = set()
    count = 0

    def run(stmt: Any) -> None:
        nonlocal count
        if keyed:
            # Plain tuples: one Row per key through .all(), no per-row mapping lookups.
            gone.update(tuple(row) for row in execute(conn, stmt.returning(*keys)).all())
        else:
            count += execute(conn, stmt).rowcount
    if table in tx.written:
        run(delete(table).where(where, current(table),
                                _backend.written_here(table, tx.stamp, tx.dialect)))
    tx.written.add(table)
    for _ in range(_PASSES):
        # A key is never expired twice here (a concurrent version of a key this
        # statement expired cannot commit before this transaction ends: it waits at
        # the current-row index), so the row counts add up to the number of keys.
        run(update(table).where(where, current(table), table.c[CREATED_AT] < tx.stamp)
            .values(period_values(table, tx.stamp)))
        if tx.dialect != "postgresql" or not _leftovers(conn, table, where, tx):
            return (len(gone) if keyed else count), gone
    raise ConflictError(f"{table.name}: rows kept changing under this delete; retry")


# -- joined-table subclasses ----------------------------------------------------------


def _joined_statement(
    state: ORMExecuteState, conn: Connection, mapper: Mapper[Any], tx: _Tx
) -> Result[Any]:
    """``update()``/``delete()`` of a joined-table subclass, entity by entity.

    Its versions span one table per level, kept in step (same key, same
    ``created_at``), so the matching entities are read once through the joined
    current rows - the WHERE clause may name any level's columns, and SET
    expressions are evaluated against the old row there - and each level then gets
    its next versions (or expires) set-based, as a flush of those objects would.
    """
    tables = versioned_tables(mapper)  # base first
    own = tables[-1]
    keys = key_columns(own)
    where = state.statement.whereclause  # type: ignore[attr-defined]
    where = where if where is not None else true()
    params = state.parameters
    if state.is_update and isinstance(params, list) and params:
        raise UnsupportedError(
            f"bulk update of {mapper.class_.__name__} by key lists is not supported for a "
            "joined-table subclass; use update().where(...).values(...) or the session")
    found = select(*keys, own.c[CREATED_AT]).select_from(version_join(mapper)).where(
        where, current(own))
    if state.is_delete:
        rows = execute(conn, found).all()
        entities = [tuple(row[:-1]) for row in rows]
        held = _current_states(state.session, mapper)
        for table in reversed(tables):  # the subclass's rows first, as a flush deletes
            expire_versions(conn, table, entities, tx,
                            {tuple(row[:-1]): row[-1] for row in rows})
        _forget_in_session(state.session, held, set(entities))
        return _counted(len(entities))
    targets = _set_targets(state.statement, tables, mapper)
    # Like the single-table statement, every matching entity gets its next version.
    rows = execute(conn, found.add_columns(
        *(value.label(f"new_{i}") for i, (_, value) in enumerate(targets)))).all()
    width = len(keys) + 1
    changes = {tuple(row[:len(keys)]): list(row[width:]) for row in rows}
    read = {tuple(row[:len(keys)]): row[len(keys)] for row in rows}
    for table in tables:
        mine = [(i, column) for i, (column, _) in enumerate(targets) if column.table is table]
        write_versions(conn, table, {key: {c.name: new[i] for i, c in mine}
                                     for key, new in changes.items()},
                       tx, read, in_step=set(changes))
    _expire_in_session(state.session, mapper, [c for c, _ in targets])
    return _counted(len(changes))


# -- keeping the session honest ---------------------------------------------------


def _expire_in_session(session: Session, mapper: Mapper[Any],
                       changed: Iterable[Column[Any]]) -> None:
    """Expire what the statement may have changed: the columns it set, ``onupdate``
    columns (of every level of a joined-table hierarchy) and ``created_at``.
    Attributes with pending changes of their own (set under ``no_autoflush``) are
    kept, to be flushed later, as with a plain model."""
    onupdate = [c for table in versioned_tables(mapper) for c in table.c
                if c.onupdate is not None]
    keys = [*dict.fromkeys(mapper.get_property_by_column(c).key
                           for c in [*changed, *onupdate]), CREATED_AT]
    for state in _current_states(session, mapper):
        stale = [k for k in keys if k not in state.committed_state]
        if stale:
            session.expire(state.obj(), stale)


def _forget_in_session(
    session: Session, held: list[InstanceState[Any]], keys: set[tuple[Any, ...]]
) -> None:
    """Deleted rows: their objects go to the "deleted" state, as after a flushed delete."""
    gone = [state for state in held if state.key is not None and state.key[1] in keys]
    _compat.mark_deleted(session, gone)


def _current_states(session: Session, mapper: Mapper[Any]) -> list[InstanceState[Any]]:
    found = []
    for obj in list(session):
        state = instance_state(obj)
        if state.key is not None and not is_slice_token(state.key[2]) \
                and isinstance(obj, mapper.class_):
            found.append(state)
    return found


def _counted(rowcount: int) -> Result[Any]:
    result: Any = IteratorResult(SimpleResultMetaData([]), iter([]))
    result.rowcount = rowcount
    return result  # type: ignore[no-any-return]


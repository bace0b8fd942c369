"""Versioned writes: the transaction's stamp and the set-based write core.

Every change to a temporal row becomes history instead of an overwrite:

* **insert** adds the current version, ``created_at`` = the transaction's stamp;
* **update** expires the current version at the stamp and inserts the next one,
  built in SQL from the expired row, so columns that did not change (or were
  never loaded) are carried over without leaving the database;
* **delete** expires the current version. Nothing is ever removed, except a
  version this same transaction created: one transaction leaves at most one
  version per key, so a second change to such a version is made in place.

:func:`write_versions` and :func:`expire_versions` do this for any number of
keys in a few statements: one ``UPDATE ... RETURNING`` expires the current
versions (guarded by ``created_at < stamp``, so no empty or negative period can
ever be written) and one ``INSERT ... SELECT`` writes the next ones. The unit of
work (``unitofwork.py``) and ORM bulk statements (``bulk.py``) both use them.

A key the guarded UPDATE did not match is examined: a version this transaction
wrote is changed in place; a version that a concurrent transaction committed
with an older stamp (and that the change was not computed from) is expired on
the next pass; anything else means a concurrent writer got there first, and
:class:`~temporal.ConflictError` is raised (retryable).
"""

from __future__ import annotations

import json
import math
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from itertools import chain
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Table,
    and_,
    bindparam,
    cast,
    column,
    delete,
    event,
    func,
    insert,
    literal,
    null,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy import table as table_clause
from sqlalchemy import values as values_clause
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

from temporal import _backend, _compat, catalog
from temporal.errors import ConflictError
from temporal.model import CREATED_AT, EXPIRED_AT, key_columns

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
    pending: dict[Table, list[Any]] = field(default_factory=dict)  # unitofwork's batches
    next_id: dict[Table, int] = field(default_factory=dict)
    written: set[Table] = field(default_factory=set)  # tables this transaction versioned
    reassert: bool = False  # a savepoint rolled back: the stamp's setting may be gone


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
        _follow(conn)
    elif tx.reassert:
        tx.reassert = False
        tx.stamp = _backend.reassert_stamp(conn, tx.stamp)
    return tx


def pending_state(conn: Connection) -> _Tx | None:
    """``conn``'s transaction state if it has one already (never stamps, never begins)."""
    root = conn.get_transaction()
    return _transactions.get(root) if root is not None else None


def wrote_versions(conn: Connection) -> bool:
    """Has ``conn``'s current transaction written temporal versions? (Never stamps.)"""
    root = conn.get_transaction() if conn.in_transaction() else None
    tx = _transactions.get(root) if root is not None else None
    return tx is not None and bool(tx.written)


def _follow(conn: Connection) -> None:
    """Listen to ``conn``'s savepoint rollbacks and commits from now on.

    On this connection only, not on every engine: an engine-wide listener would
    switch every connection of the process, plain models' included, to the
    slower event-dispatching path for every statement.
    """
    if not event.contains(conn, "rollback_savepoint", _forget_savepoint):
        event.listen(conn, "rollback_savepoint", _forget_savepoint)
        event.listen(conn, "commit", _release_stamp)


def _forget_savepoint(conn: Connection, name: Any, context: Any) -> None:
    """A rolled-back savepoint takes this transaction's scratch state with it.

    Batches a failed flush left behind must not be written by the next flush
    (a ghost write), and SQLite's id counter must not skip the ids the savepoint
    gave back: both are rebuilt from the database when next needed. The stamp
    stays (one transaction, one timestamp), and ``written`` only ever enables
    a check, so a stale entry costs a statement, never correctness.
    """
    root = conn.get_transaction()
    tx = _transactions.get(root) if root is not None else None
    if tx is not None:
        tx.pending.clear()
        tx.next_id.clear()
        # The raw writers' triggers read the stamp from the database (a transaction-local
        # setting, SQLite's clock row), which the rollback takes along if the savepoint
        # took the stamp.
        tx.reassert = True


def _release_stamp(conn: Connection) -> None:
    """SQLite: a committing library transaction stops lending its stamp to raw statements."""
    root = conn.get_transaction()
    tx = _transactions.get(root) if root is not None else None
    if tx is not None and tx.dialect == "sqlite":
        _backend.release_sqlite_stamp(conn.connection.driver_connection)


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


def matching(
    table: Table, keys: Sequence[Key], dialect: Any
) -> Iterator[ColumnElement[bool]]:
    """Predicates selecting rows by key, a few per call (``dialect``: the connection's).

    PostgreSQL gets one ``IN (SELECT ... FROM unnest(arrays))`` whatever the
    number of keys: two bind parameters, one cached plan, a hash join. SQLite
    gets one ``IN (SELECT ... FROM json_each(?))`` over the keys bound as their
    columns bind them (one bind parameter and one cached statement, where an
    ``IN`` list is rendered anew with every key), or plain ``IN`` lists in chunks
    below its variable limit for keys JSON cannot carry exactly.
    """
    cols = key_columns(table)
    if not keys:
        return
    if dialect.name == "postgresql":
        arrays = [bindparam(None, [k[i] for k in keys], type_=postgresql.ARRAY(c.type))
                  for i, c in enumerate(cols)]
        names = [f"k{i}" for i in range(len(cols))]
        source = func.unnest(*arrays).table_valued(*names).render_derived()
        if len(cols) == 1:
            yield cols[0].in_(select(source.c[names[0]]))
        else:
            yield tuple_(*cols).in_(select(*(source.c[n] for n in names)))
        return
    if dialect.name == "sqlite":
        payload = _as_json_rows([c.type for c in cols], keys, dialect, flat=len(cols) == 1)
        if payload is not None:
            value: Any = column("value")
            rows = func.json_each(bindparam(None, payload, type_=sqltypes.Text()))
            if len(cols) == 1:
                yield cols[0].in_(select(value).select_from(rows))
            else:
                yield tuple_(*cols).in_(select(*(
                    func.json_extract(value, f"$[{i}]") for i in range(len(cols))
                )).select_from(rows))
            return
    for chunk in _chunks(keys):
        if len(cols) == 1:
            yield cols[0].in_([k[0] for k in chunk])
        else:
            yield tuple_(*cols).in_(chunk)


def _insert_next_versions(
    conn: Connection, table: Table, olds: dict[Key, dict[str, Any]], tx: _Tx,
    stored: dict[Key, Any] | None = None,
) -> None:
    """Insert the next version of each key: its just-expired row with new values.

    Built in SQL (``INSERT ... SELECT`` from the expired rows joined with the
    new values), so columns that did not change never leave the database.
    Keys are grouped by the set of columns they change. ``stored`` (SQLite):
    each key's expired ``created_at`` exactly as the database returned it, so
    the join finds the row by primary key, not by scanning the key's history
    (the very text stored, whatever its spelling: never re-rendered here).
    """
    # Within one transaction a key has exactly one row that was current before
    # the stamp and expired at it: the one just expired.
    match = key_columns(table)
    by_start = stored is not None and all(type(v) is str for v in stored.values())
    for names, sql, group in _groups(olds):
        columns: list[Any] = [*match, *(table.c[n] for n in names)]
        if by_start:
            assert stored is not None
            columns.append(_STORED)
        if len(names) == 1 and by_start:
            (name,) = names
            rows = [(*key, olds[key][name], stored[key]) for key in group]  # type: ignore[index]
        elif len(names) == 1:
            (name,) = names
            rows = [(*key, olds[key][name]) for key in group]
        else:
            rows = [(*key, *[olds[key][n] for n in names],
                     *([stored[key]] if by_start else [])) for key in group]  # type: ignore[index]
        for source in _row_sources(columns, rows, conn.dialect):
            new_value = {n: source.c[f"s{len(match) + i}"] for i, n in enumerate(names)}
            new_value.update(sql)
            chosen = next_version(table, tx.stamp, new_value, lambda col: col)
            on = and_(*(c == source.c[f"s{i}"] for i, c in enumerate(match)))
            if by_start:
                on = and_(on, table.c[CREATED_AT] == source.c[f"s{len(columns) - 1}"])
            rows_from = select(*chosen).select_from(table.join(source, on)).where(
                table.c[EXPIRED_AT] == tx.stamp, table.c[CREATED_AT] < tx.stamp)
            execute(conn, insert(table).from_select([c.name for c in table.c], rows_from))


class _Stored:
    """A pseudo-column for :func:`_row_sources`: a value passed as the database gave it."""

    type = sqltypes.NullType()


_STORED: Any = _Stored()


def _groups(changes: dict[Key, dict[str, Any]]
            ) -> list[tuple[tuple[str, ...], dict[str, Any], list[Key]]]:
    """Keys grouped by the columns they change, as ((bound names), {name: SQL}).

    Plain values are bound per row; SQL expressions (``onupdate=func.now()``, or
    ``obj.col = func.upper(...)`` on an ORM object) go into the statement as they
    are, so keys share a group only when they share the very same expressions.
    """
    groups: dict[Any, list[Key]] = defaultdict(list)
    expressions: dict[Any, dict[str, Any]] = {}
    plain: dict[tuple[str, ...], Any] = {}  # the names a change sets, in its order -> signature
    for key, values in changes.items():
        for v in values.values():
            if type(v) not in _SCALARS:
                break
        else:  # the common case, fast
            shape = tuple(values)
            signature = plain.get(shape)
            if signature is None:
                signature = plain[shape] = (tuple(sorted(shape)), ())
                expressions[signature] = {}
            groups[signature].append(key)
            continue
        names = tuple(sorted(n for n, v in values.items() if not _is_sql(v)))
        sql = {n: v for n, v in values.items() if _is_sql(v)}
        signature = (names, tuple(sorted((n, id(v)) for n, v in sql.items())))
        groups[signature].append(key)
        expressions[signature] = sql
    return [(sig[0], expressions[sig], keys) for sig, keys in groups.items()]


# Types whose values are never SQL expressions (a shortcut past _is_sql).
_SCALARS = frozenset({int, str, float, bool, type(None), bytes, Decimal, datetime, date})


def _is_sql(value: Any) -> bool:
    return isinstance(value, ClauseElement) or hasattr(value, "__clause_element__")


def next_version(table: Table, stamp: datetime, new: dict[str, Any],
                 old: Callable[[Column[Any]], Any]) -> list[Any]:
    """The SELECT list of a next version: new values, the rest carried from ``old``."""
    chosen: list[Any] = []
    for col in table.c:
        if col.name == CREATED_AT:
            chosen.append(literal(stamp, col.type))
        elif col.name == EXPIRED_AT:
            chosen.append(null())
        else:
            chosen.append(new[col.name] if col.name in new else old(col))
    return chosen


def _row_sources(
    columns: list[Column[Any]], rows: list[tuple[Any, ...]], dialect: Any
) -> Iterator[Any]:
    """``rows`` as a FROM-able source with columns s0, s1, ... typed like ``columns``.

    PostgreSQL: one ``unnest`` of one array per column (a bind per column, one
    cached plan); array-typed columns (which unnest would flatten) get ``VALUES``
    lists. SQLite: the rows, bound by their columns' types in Python, as one JSON
    text read back with ``json_each``: one bind parameter and one cached statement
    whatever the number of rows (a VALUES list of thousands of binds is compiled
    anew each time); values JSON cannot carry exactly (bytes, NaN) get VALUES.
    """
    names = [f"s{i}" for i in range(len(columns))]
    if dialect.name == "postgresql" and not any(
            isinstance(c.type, sqltypes.ARRAY) for c in columns):
        arrays = [bindparam(None, [r[i] for r in rows], type_=postgresql.ARRAY(c.type))
                  for i, c in enumerate(columns)]
        yield func.unnest(*arrays).table_valued(*names).render_derived(name="temporal_next")
        return
    if dialect.name == "sqlite":
        payload = _as_json_rows([c.type for c in columns], rows, dialect)
        if payload is not None:
            value: Any = column("value")
            # MATERIALIZED: SQLite then indexes the rows automatically for the join
            # instead of scanning the table once per row.
            yield select(*(func.json_extract(value, f"$[{i}]").label(n)
                           for i, n in enumerate(names))).select_from(
                func.json_each(bindparam(None, payload, type_=sqltypes.Text()))
            ).cte("temporal_next").prefix_with("MATERIALIZED")
            return
    per_chunk = max(1, 30000 // len(columns))
    for i in range(0, len(rows), per_chunk):
        # A CTE, because SQLite cannot name the columns of a VALUES alias.
        source = values_clause(*(column(n, c.type) for n, c in zip(names, columns, strict=True)),
                               name="temporal_next").data(rows[i : i + per_chunk]).cte()
        if dialect.name == "postgresql":
            # PostgreSQL types a VALUES column from its rows: NULLs and untyped binds
            # (an Enum, a NULL boolean) would come out as text. Cast to the column's type.
            yield select(*(cast(source.c[n], c.type).label(n)
                           for n, c in zip(names, columns, strict=True))).subquery()
        else:
            yield source


def _as_json_rows(types: list[Any], rows: Sequence[tuple[Any, ...]], dialect: Any,
                  flat: bool = False) -> str | None:
    """SQLite: ``rows`` bound as columns of ``types`` would bind them, as a JSON array of
    arrays (``flat``: of the single values), None when a bound value is not a str, int or
    finite float."""
    processors = [type_.bind_processor(dialect) for type_ in types]
    if any(p is not None for p in processors):
        by_column = [[r[i] for r in rows] if p is None else [p(r[i]) for r in rows]
                     for i, p in enumerate(processors)]
        rows = list(zip(*by_column, strict=True))
    if not set(map(type, chain.from_iterable(rows))) <= _JSON_PLAIN:  # tested at C speed
        for v in chain.from_iterable(rows):
            if not (isinstance(v, (str, int)) or v is None
                    or (isinstance(v, float) and math.isfinite(v))):
                return None
    if flat:
        return json.dumps([r[0] for r in rows])
    return json.dumps(rows)


# Bound values JSON carries exactly, whatever they hold (floats: only finite ones).
_JSON_PLAIN = frozenset({int, str, bool, type(None)})


def _chunks(items: Sequence[Key]) -> Iterator[Sequence[Key]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def execute(conn: Connection, statement: Any, params: Any = None) -> Any:
    """Execute one of temporal's statements (``conflicts.py`` turns a lost race into
    ConflictError, here as on every other path)."""
    return conn.execute(statement, params)


def write_versions(
    conn: Connection, table: Table, changes: dict[Key, dict[str, Any]], tx: _Tx,
    read: dict[Key, datetime] | None = None, in_step: set[Key] | None = None,
) -> dict[Key, dict[str, Any]]:
    """Apply ``{key: {column: new value}}`` as new versions; return the rows written.

    ``read`` names, per key, the version the new values were computed from
    (the ``created_at`` of a loaded ORM object): only that version may be
    expired, anything else is a concurrent change and raises ConflictError.
    A change that turns out to change nothing (its old value was never loaded,
    and equals the new one) writes nothing and is left out of the result,
    except for keys ``in_step`` (the tables of a joined-table hierarchy, which
    get their versions together).
    """
    with _backend.library_statements(conn, tx.dialect):
        return _write_versions(conn, table, changes, tx, read or {}, in_step or set())


def _write_versions(
    conn: Connection, table: Table, changes: dict[Key, dict[str, Any]], tx: _Tx,
    read: dict[Key, datetime], in_step: set[Key],
) -> dict[Key, dict[str, Any]]:
    remaining = dict(changes)
    written: dict[Key, dict[str, Any]] = {}
    changed_names = sorted({name for values in changes.values() for name in values})
    position = {name: i for i, name in enumerate(changed_names, start=1)}  # in _expire's rows
    defaults = _onupdate_columns(table)
    for _ in range(_PASSES):
        old_rows = _expire(conn, table, list(remaining), tx, read,
                           returning=[table.c[n] for n in changed_names], stored=True)
        fresh: dict[Key, dict[str, Any]] = {}
        unchanged = []
        for key, old in old_rows.items():
            values = remaining.pop(key)
            if key not in in_step:
                for name, value in values.items():
                    if not same_value(old[position[name]], value):
                        break
                else:
                    unchanged.append((*key, old[0]))
                    continue
            if defaults:
                values = {**values, **onupdate_values(table, values, defaults)}
            fresh[key] = values
            written[key] = values
        if unchanged:
            _restore(conn, table, unchanged, tx)
        if fresh:
            _insert_next_versions(conn, table, fresh, tx, {
                key: old_rows[key][-1] for key in fresh} if tx.dialect == "sqlite" else None)
        if not remaining:
            return written
        retry = _diagnose(conn, table, remaining, tx, "update", read)
        in_place = {k: {**v, **onupdate_values(table, v)}
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
    with _backend.library_statements(conn, tx.dialect):
        _expire_versions(conn, table, list(keys), tx, read or {})


def _expire_versions(
    conn: Connection, table: Table, remaining: list[Key], tx: _Tx, read: dict[Key, datetime],
) -> None:
    for _ in range(_PASSES):
        expired = _expire(conn, table, remaining, tx, read)
        left: dict[Key, Any] = {k: {} for k in remaining if k not in expired}
        if not left:
            return
        retry = _diagnose(conn, table, left, tx, "delete", read)
        own = [k for k in left if k not in retry]
        for selection in matching(table, own, conn.dialect):
            execute(conn, delete(table).where(selection, current(table),
                                              table.c[CREATED_AT] == tx.stamp))
        remaining = list(retry)
        if not remaining:
            return
    raise ConflictError(f"{table.name}: rows kept changing under this transaction; retry")


def _expire(
    conn: Connection, table: Table, keys: Sequence[Key], tx: _Tx, read: dict[Key, datetime],
    *, returning: Sequence[Column[Any]] = (), stored: bool = False,
) -> dict[Key, tuple[Any, ...]]:
    """Expire the current versions of ``keys``; each must be the version ``read`` names, if any.

    Returns, per expired key, a tuple: its ``created_at``, the ``returning``
    columns in order, and last (``stored``, SQLite only) the ``created_at``
    exactly as stored, for :func:`_insert_next_versions`.
    ``read`` is only given by the unit of work, whose flush rolls back on error.
    """
    width = len(key_columns(table))
    tx.written.add(table)
    rows: dict[Key, tuple[Any, ...]] = {}
    if tx.dialect == "sqlite":
        # created_at as stored, parsed here: rows with a result type to apply cost
        # SQLAlchemy about half as much again as rows without, more than the parsing.
        raw = type_coerce(table.c[CREATED_AT], sqltypes.NullType())
        parse = table.c[CREATED_AT].type.result_processor(conn.dialect, None) or _as_is
        # Not the primary key (key, created_at), which would visit every version of
        # each key: the current-row index finds the one current version.
        started = _compat.unindexed(table.c[CREATED_AT])
        for selection in matching(table, keys, conn.dialect):
            stmt = (
                update(table)
                .where(selection, current(table), started < tx.stamp)
                .values(period_values(table, tx.stamp))
                .returning(*key_columns(table), *returning, raw)
            )
            for row in execute(conn, stmt).all():
                text = row[-1]
                if stored:
                    rows[row[:width]] = (parse(text), *row[width:])
                else:
                    rows[row[:width]] = (parse(text), *row[width:-1])
    else:
        for selection in matching(table, keys, conn.dialect):
            stmt = (
                update(table)
                .where(selection, current(table), table.c[CREATED_AT] < tx.stamp)
                .values(period_values(table, tx.stamp))
                .returning(*key_columns(table), table.c[CREATED_AT], *returning)
            )
            # Plain tuples: a Row mapping per row costs more than the statement here.
            rows.update((row[:width], row[width:]) for row in execute(conn, stmt).all())
    for key, started_at in read.items():
        # Checked after the fact: raising here fails the flush, which rolls
        # back everything it wrote, this UPDATE included.
        row = rows.get(key)
        if row is not None and row[0] != started_at:
            raise ConflictError(
                f"cannot change {table.name} {show_key(key)}: it changed since it was read "
                f"(read the version from {started_at.isoformat()}, a concurrent transaction "
                f"wrote one from {row[0].isoformat()}); roll back and retry"
            )
    return rows


def _as_is(value: Any) -> Any:
    return value


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
    for selection in matching(table, list(keys), conn.dialect):
        stmt = select(*key_columns(table), table.c[CREATED_AT], mine).where(
            selection, current(table)
        )
        for row in execute(conn, stmt).mappings():
            found[key_of(row, table)] = (row[CREATED_AT], bool(row["mine"]))
    retry: set[Key] = set()
    for key in keys:
        if key not in found:
            raise ConflictError(
                f"cannot {action} {table.name} {show_key(key)}: it has no current version any "
                "more (a concurrent transaction deleted it); roll back and retry"
            )
        created_at, is_mine = found[key]
        if is_mine:
            continue
        if key in read:
            raise ConflictError(
                f"cannot {action} {table.name} {show_key(key)}: it changed since it was read "
                f"(read the version from {read[key].isoformat()}, a concurrent transaction "
                f"wrote one from {created_at.isoformat()}); roll back and retry"
            )
        if created_at < tx.stamp:
            retry.add(key)  # replaced by an older-stamped commit during our statement
            continue
        raise ConflictError(
            f"cannot {action} {table.name} {show_key(key)}: a concurrent transaction wrote a "
            f"version starting {created_at.isoformat()}, after this transaction's "
            f"timestamp {tx.stamp.isoformat()}; roll back and retry"
        )
    return retry


def _update_in_place(
    conn: Connection, table: Table, changes: dict[Key, dict[str, Any]], tx: _Tx
) -> dict[Key, dict[str, Any]]:
    """Change versions this transaction created (one version per key per transaction)."""
    cols = key_columns(table)
    for names, sql, keys in _groups(changes):
        if not names and not sql:
            continue  # a version kept in step that changes nothing of its own
        stmt = (
            update(table)
            .where(*(c == bindparam(f"k_{c.name}") for c in cols), current(table),
                   table.c[CREATED_AT] == tx.stamp)
            .values({**{n: bindparam(f"v_{n}", type_=table.c[n].type) for n in names}, **sql})
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


def _onupdate_columns(table: Table) -> list[Column[Any]]:
    return [col for col in table.c
            if col.onupdate is not None and col.name not in (CREATED_AT, EXPIRED_AT)]


def onupdate_values(table: Table, changed: dict[str, Any],
                    columns: list[Column[Any]] | None = None) -> dict[str, Any]:
    """Values of ``onupdate=`` defaults for the columns a change does not set.

    Python scalars and callables give values, SQL expressions (``func.now()``)
    stay expressions, evaluated by the statement that writes the version.
    ``columns``: the table's columns with such defaults, if the caller has them.
    """
    out: dict[str, Any] = {}
    for col in _onupdate_columns(table) if columns is None else columns:
        default = col.onupdate
        if default is None or col.name in changed:
            continue
        arg = getattr(default, "arg", None)
        if getattr(default, "is_callable", False):
            out[col.name] = arg(None)  # type: ignore[misc]
        else:
            out[col.name] = arg
    return out


def same_value(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # values that refuse comparison are treated as changed
        return False


def show_key(key: Key) -> str:
    return repr(key[0]) if len(key) == 1 else repr(key)


# -- new entities on SQLite: handing out ids ------------------------------------


def next_id(conn: Connection, table: Table, tx: _Tx) -> int:
    """Next entity id for an identity key on SQLite (which has no identity columns).

    Serialized by SQLite's write lock, which the stamp already holds.
    """
    key = key_columns(table)[0]
    if table not in tx.next_id:
        highest: Any = select(func.coalesce(func.max(key), 0)).scalar_subquery()
        if catalog.has_archive(conn, table.name):  # ids of archived entities stay used
            archived = table_clause(catalog.archive_name(table.name), column(key.name))
            highest = func.max(highest, select(func.coalesce(func.max(
                archived.c[key.name]), 0)).scalar_subquery())
        tx.next_id[table] = conn.execute(select(highest)).scalar_one()
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

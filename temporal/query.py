"""Reading temporal tables: the present by default, any moment on request.

Every ORM read of a temporal model - ``select()``, ``session.get()``, lazy,
joined and selectin relationship loads, attribute refreshes - sees current rows
only: a ``do_orm_execute`` hook adds ``expired_at IS NULL`` for every temporal
entity in the statement through ``with_loader_criteria``.

``as_of(t)`` is a loader option that swaps that rule for "valid at ``t``"
(``created_at <= t`` and ``expired_at`` NULL or after ``t``). It propagates to
relationship loads of the objects it loads, so a whole object graph is read
as of one moment. Objects read as of ``t`` live in their own slice of the
identity map (SQLAlchemy's ``identity_token``), so an as-of object never
replaces, or is mistaken for, the current object with the same key; they are
read-only.

Several versions of one key cannot be ORM objects at once (they share an
identity), so period queries return rows: :func:`versions` builds a SELECT of
a model's versions over a SQL:2011 period, and :func:`history` lists one key's
versions, oldest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Result, Row, Select, Table, and_, false, inspect, or_, select
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.orm.interfaces import UserDefinedOption
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.util import ClauseAdapter, find_tables

from temporal import _compat, archival, archive_reads, hooks, reach
from temporal.association import moment_parameters, reading_past_links
from temporal.clock import aware
from temporal.errors import UnsupportedError
from temporal.model import (
    CREATED_AT,
    EXPIRED_AT,
    Temporal,
    is_temporal_table,
    key_columns,
    version_join,
    versioned_tables,
)

ALL_VERSIONS = "temporal_all_versions"
"""Execution option: leave this statement's temporal entities unfiltered."""


@dataclass(frozen=True)
class Slice:
    """The identity token of objects read as of ``at``."""

    at: datetime


def is_slice_token(token: Any) -> bool:
    return isinstance(token, Slice)


class AsOf(UserDefinedOption):
    """Loader option: read every temporal entity of the statement as of a moment."""

    propagate_to_loaders = True

    def __init__(self, at: datetime) -> None:
        super().__init__(Slice(aware(at, what="as_of")))

    @property
    def slice(self) -> Slice:
        moment = self.payload
        assert isinstance(moment, Slice)
        return moment


def as_of(at: datetime) -> AsOf:
    """Read the statement's temporal entities as they were at ``at`` (timezone-aware).

    ``select(Customer).options(as_of(t))``,
    ``session.get(Customer, 7, options=[as_of(t)])``.
    """
    return AsOf(at)


def valid_at(table: Table | Any, at: datetime) -> ColumnElement[bool]:
    """SQL: the version in ``table`` was valid at ``at``."""
    at = aware(at, what="as_of")
    return and_(
        table.c[CREATED_AT] <= at,
        or_(table.c[EXPIRED_AT].is_(None), table.c[EXPIRED_AT] > at),
    )


def _slice_of(options: Sequence[Any]) -> Slice | None:
    for option in options:
        if isinstance(option, AsOf):
            return option.slice
    return None


def _as_of_criteria(at: datetime) -> Any:
    return with_loader_criteria(
        Temporal,
        lambda cls: and_(
            cls.created_at <= at, or_(cls.expired_at.is_(None), cls.expired_at > at)
        ),
        include_aliases=True,
    )


_CURRENT = with_loader_criteria(
    Temporal, lambda cls: cls.expired_at.is_(None), include_aliases=True
)


def read_in_time(state: ORMExecuteState) -> Result[Any] | None:
    """``do_orm_execute`` for a SELECT (``bulk.py`` registers the one listener)."""
    if not reach.statement_may_read_temporal(state.statement) and \
            _slice_of(state.user_defined_options) is None:
        # No temporal entity anywhere in it, and no moment to read plain objects at
        # (their identity slice): nothing to add. Asked first, as it costs least.
        return None
    if state.execution_options.get(ALL_VERSIONS):
        _with_archive(state)
        return None
    moment = _slice_of(state.user_defined_options)
    if state.is_column_load:
        # Refreshing an object by key: with_loader_criteria stays out of these
        # loads, but a key alone would match every version.
        mapper = state.bind_mapper
        # (A joined-table subclass's own columns load through a statement the
        # mapper derives from the inherit condition: it names the exact version.)
        if mapper is not None and is_temporal_table(mapper.local_table) \
                and hasattr(state.statement, "where"):
            table = mapper.local_table
            rule = table.c[EXPIRED_AT].is_(None) if moment is None else valid_at(table, moment.at)
            state.statement = state.statement.where(rule)
        if moment is not None:
            state.update_execution_options(identity_token=moment)
    elif moment is None:
        state.statement = state.statement.options(_CURRENT)
    else:
        state.statement = state.statement.options(_as_of_criteria(moment.at))
        state.update_execution_options(identity_token=moment)
    if moment is None:
        return None
    # Links through temporal association tables read this moment too: it is the
    # value of their criterion's bound parameter.
    moment_params = moment_parameters(moment.at)
    if state.parameters is None:
        state.parameters = {}  # invoke_statement() merges params into a mapping
    with reading_past_links():
        if _dialect(state) == "sqlite":
            archived = archive_reads.archived_after(_connection(state), moment.at)
            if archived:
                state.update_execution_options(compiled_cache=None)
                with archive_reads.reading_archives(archived):
                    return state.invoke_statement(params=moment_params)
        return state.invoke_statement(params=moment_params)


def _dialect(state: ORMExecuteState) -> str:
    return state.session.get_bind(**state.bind_arguments).dialect.name


def _connection(state: ORMExecuteState) -> Any:
    return state.session.connection(bind_arguments=state.bind_arguments)


def _with_archive(state: ORMExecuteState) -> None:
    """SQLite: an all-versions read (history, versions) reads the archive too.

    (On PostgreSQL the archive inherits from the table, so it is read anyway.)
    """
    if _dialect(state) != "sqlite":
        return
    statement: Any = state.statement
    froms = [t for f in statement.get_final_froms() for t in find_tables(f)]
    for table in froms:  # a joined-table subclass's history joins one table per level
        if isinstance(table, Table) and is_temporal_table(table):
            union = archival.all_versions(_connection(state), table)
            if union is not table:
                statement = ClauseAdapter(union).traverse(statement)
    state.statement = statement


def _option_of(state: Any) -> AsOf | None:
    """The as_of option a collection of this object reads with (None: the present)."""
    token = state.key[2] if state.key is not None else None
    return AsOf(token.at) if isinstance(token, Slice) else None


hooks.when_installed(lambda: _compat.route_identity_lookups(_slice_of, is_slice_token))
hooks.when_installed(lambda: _compat.scope_collection_reads(_option_of))


# -- periods -------------------------------------------------------------------


def period_predicate(
    table: Table | Any,
    *,
    from_to: tuple[datetime, datetime] | None = None,
    between: tuple[datetime, datetime] | None = None,
    contained_in: tuple[datetime, datetime] | None = None,
) -> ColumnElement[bool] | None:
    """SQL:2011 period selection over ``[created_at, expired_at)``; None means ALL.

    * ``from_to=(a, b)``: versions overlapping ``[a, b)``: ``created_at < b`` and
      ``expired_at > a``;
    * ``between=(a, b)``: like ``from_to`` but ``b`` included: ``created_at <= b``;
    * ``contained_in=(a, b)``: versions that began and ended inside ``[a, b]``.

    A current version's ``expired_at`` is NULL: it counts as open-ended. A
    reversed range (``a > b``) selects nothing.
    """
    given = [p for p in (from_to, between, contained_in) if p is not None]
    if len(given) > 1:
        raise TypeError("pass at most one of from_to=, between=, contained_in=")
    if not given:
        return None
    start, end = (aware(t, what="period bound") for t in given[0])
    if start > end:
        return false()
    created, expired = table.c[CREATED_AT], table.c[EXPIRED_AT]
    if from_to is not None:
        return and_(created < end, or_(expired.is_(None), expired > start))
    if between is not None:
        return and_(created <= end, or_(expired.is_(None), expired > start))
    return and_(created >= start, expired.isnot(None), expired <= end)


def versions(
    model: type[Any],
    *,
    from_to: tuple[datetime, datetime] | None = None,
    between: tuple[datetime, datetime] | None = None,
    contained_in: tuple[datetime, datetime] | None = None,
) -> Select[Any]:
    """A SELECT of ``model``'s versions (all, or over one SQL:2011 period).

    Rows carry the model's attribute names plus ``created_at`` and
    ``expired_at``, ordered by key then ``created_at``; add ``.where()`` freely::

        session.execute(versions(Customer, from_to=(a, b)).where(Customer.tier == "gold"))
    """
    table = temporal_table(model)
    mapper = inspect(model)
    # A joined-table subclass keeps its versions in step with its parents' (same key,
    # same created_at): a version of it is one row of each table, joined.
    tables = versioned_tables(mapper)[::-1]  # its own first
    source = version_join(mapper)
    columns = []
    for prop in mapper.column_attrs:
        # An attribute mapped to several tables (the key, the period) reads the nearest.
        held = [c for t in tables for c in prop.columns if c.table is t]
        if held:
            columns.append(held[0].label(prop.key))
    stmt = select(*columns).select_from(source).order_by(*key_columns(table),
                                                          table.c[CREATED_AT])
    where = period_predicate(table, from_to=from_to, between=between, contained_in=contained_in)
    if where is not None:
        stmt = stmt.where(where)
    return stmt.execution_options(**{ALL_VERSIONS: True})


def history(session: Session, model: type[Any], key: Any) -> list[Row[Any]]:
    """All versions of one entity, oldest first.

    ``key`` is the primary key value, or a tuple (or mapping of attribute names)
    for a composite key. Each row exposes the model's attributes plus
    ``created_at`` and ``expired_at``.
    """
    table = temporal_table(model)
    cols = key_columns(table)
    values = _key_values(model, key, len(cols))
    stmt = versions(model).where(*(c == v for c, v in zip(cols, values, strict=True)))
    return list(session.execute(stmt).all())


def temporal_table(model: type[Any]) -> Table:
    table = getattr(model, "__table__", None)
    if not is_temporal_table(table):
        raise UnsupportedError(f"{getattr(model, '__name__', model)!r} is not a Temporal model")
    assert isinstance(table, Table)
    return table


def _key_values(model: type[Any], key: Any, width: int) -> tuple[Any, ...]:
    if isinstance(key, Mapping):
        mapper = inspect(model)
        return tuple(key[mapper.get_property_by_column(c).key] for c in mapper.primary_key)
    values = tuple(key) if isinstance(key, (tuple, list)) else (key,)
    if len(values) != width:
        raise TypeError(f"{model.__name__} has a {width}-column key; got {key!r}")
    return values

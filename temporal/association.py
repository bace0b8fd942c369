"""Many-to-many through a temporal association table.

A ``relationship(secondary=...)`` whose association table is temporal keeps
the history of its links exactly as a temporal model keeps the history of
its rows. Declare the table either way:

* as a model, ``class ArticleTag(Temporal, Base)`` with the two foreign keys
  as its primary key, passing ``secondary=ArticleTag.__table__`` (this also
  gives you ``history()``, ``versions()`` and bulk statements on the links);
* or with :func:`association_table`, the temporal twin of a plain ``Table``.

**Reads.** The relationship's secondary join condition gets one more
criterion: the link was valid at the statement's moment. The moment is a
bound parameter, "the present" unless the statement reads :func:`as_of`, so
every loading style that builds on the join condition (lazy, joined,
selectin, subquery, ``select(A).join(A.tags)``, ``any()``/``has()``,
dynamic and write-only collections) sees the links of that moment, and one
cached statement serves every moment.

**Writes.** The unit of work computes which links a flush adds and removes
(``append``, ``remove``, assignment, ``clear``, a deleted parent) as for a
plain association table; only the statements change. An added link is
inserted as the current version, stamped with the transaction's timestamp; a
removed link's current version is expired, so every past link stays readable.
A link added and removed in one transaction leaves nothing, and a link that a
concurrent transaction removed first is a :class:`~temporal.ConflictError`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    MetaData,
    Table,
    and_,
    bindparam,
    insert,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapper, PassiveFlag, object_mapper
from sqlalchemy.orm.attributes import get_history
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from temporal import _compat, hooks
from temporal.clock import UTC
from temporal.errors import UnsupportedError
from temporal.model import (
    CREATED_AT,
    EXPIRED_AT,
    is_temporal_table,
    key_columns,
    period_columns,
    temporal_table,
)
from temporal.types import UTCDateTime
from temporal.versioning import execute, expire_versions, transaction_state

MOMENT = "temporal_moment"
"""Name of the bound parameter that carries a statement's moment to link criteria."""

# "The present" as a moment: every version started before it, and only a current
# version (expired_at NULL) is still valid at it.
_PRESENT = datetime(9999, 12, 31, tzinfo=UTC)


def association_table(
    name: str, metadata: MetaData, *columns: Any, ttl: timedelta | None = None, **kw: Any
) -> Table:
    """A temporal association table for ``relationship(secondary=...)``.

    Give it the two foreign-key columns as ``primary_key=True`` (they name the
    link), and any other columns; ``created_at`` and ``expired_at`` are added::

        article_tag = association_table(
            "article_tag", Base.metadata,
            Column("article_id", ForeignKey("articles.id"), primary_key=True),
            Column("tag_id", ForeignKey("tags.id"), primary_key=True),
        )
    """
    return temporal_table(name, metadata, (*columns, *period_columns()), kw, ttl, name)


_READING_PAST: ContextVar[bool] = ContextVar("temporal_links_as_of", default=False)


def moment_parameters(at: datetime) -> dict[str, datetime]:
    """Execution parameters that make link criteria read as of ``at``."""
    return {MOMENT: at}


@contextmanager
def reading_past_links() -> Iterator[None]:
    """Compile link criteria in this block for an as-of read (see :class:`_ValidAtMoment`)."""
    token = _READING_PAST.set(True)
    try:
        yield
    finally:
        _READING_PAST.reset(token)


class _ValidAtMoment(ColumnElement[bool]):
    """The link criterion: ``expired_at IS NULL`` in reads of the present (so the
    database can use the table's current-rows index, whatever plan it caches),
    the full "valid at the moment" rule in as-of reads.

    Which one is rendered is decided at compile time. That is safe for the
    compiled cache because an as-of statement carries its ``as_of`` option,
    which is part of its cache key: it never shares a cached form with a read
    of the present.
    """

    __visit_name__ = "temporal_valid_at_moment"
    inherit_cache = True
    type = Boolean()
    _traverse_internals = [("present", InternalTraversal.dp_clauseelement),
                           ("past", InternalTraversal.dp_clauseelement)]

    def __init__(self, present: ColumnElement[bool], past: ColumnElement[bool]) -> None:
        self.present = present
        self.past = past


@compiles(_ValidAtMoment)
def _render_valid_at_moment(element: _ValidAtMoment, compiler: Any, **kw: Any) -> str:
    chosen = element.past if _READING_PAST.get() else element.present
    return compiler.process(chosen, **kw)  # type: ignore[no-any-return]


def _valid_at_moment(table: Table) -> ColumnElement[bool]:
    moment: BindParameter[datetime] = bindparam(MOMENT, _PRESENT, type_=UTCDateTime())
    current = table.c[EXPIRED_AT].is_(None)
    return _ValidAtMoment(current, and_(table.c[CREATED_AT] <= moment,
                                        or_(current, table.c[EXPIRED_AT] > moment)))


def _reads_moment(clause: Any) -> bool:
    return clause is not None and any(
        isinstance(e, BindParameter) and e.key == MOMENT for e in visitors.iterate(clause))


def _with_period(secondary: Any, primaryjoin: Any, secondaryjoin: Any) -> Any:
    # A backref's join conditions are its forward relationship's, swapped: the
    # criterion is already there.
    if not is_temporal_table(secondary) or _reads_moment(primaryjoin) \
            or _reads_moment(secondaryjoin):
        return secondaryjoin
    return and_(secondaryjoin, _valid_at_moment(secondary))


def _write_links(
    conn: Connection, table: Table, inserts: list[dict[str, Any]],
    updates: list[dict[str, Any]], deletes: list[dict[str, Any]],
) -> None:
    if updates:
        raise UnsupportedError(
            f"the links in {table.name} name the entities they join, so a changed key "
            "cannot move them; delete the entity and insert a new one instead")
    tx = transaction_state(conn)
    if deletes:
        names = [c.key for c in key_columns(table)]
        missing = [n for n in names if n not in deletes[0]]
        if missing:
            raise UnsupportedError(
                f"{table.name}: its key column(s) {missing} are not set by the relationship, "
                "so a removed link cannot be told apart; make the foreign keys the key")
        keys = list(dict.fromkeys(tuple(row[n] for n in names) for row in deletes))
        expire_versions(conn, table, keys, tx)
    if inserts:
        tx.written.add(table)
        period = {CREATED_AT: tx.stamp, EXPIRED_AT: None}
        execute(conn, insert(table), [{**row, **period} for row in inserts])


def end_links(conn: Connection, mapper: Mapper[Any], states: list[InstanceState[Any]]) -> None:
    """A deleted temporal entity's links end with it (the ORM would have deleted
    them, but temporal deletes never reach it)."""
    tx = transaction_state(conn)
    for rel in _linking(mapper):
        table = rel.secondary
        assert isinstance(table, Table)
        found: list[tuple[Any, ...]] = []
        for state in states:
            obj = state.obj()
            if obj is None:
                continue
            where = [link == getattr(obj, mapper.get_property_by_column(own).key)
                     for own, link in rel.synchronize_pairs]
            found += [tuple(r) for r in conn.execute(
                select(*key_columns(table)).where(*where, table.c[EXPIRED_AT].is_(None)))]
        if found:
            expire_versions(conn, table, list(dict.fromkeys(found)), tx)


def changes_links(obj: Any) -> bool:
    """Does ``obj`` have unflushed changes to collections through temporal links?"""
    return any(get_history(obj, rel.key, passive=PassiveFlag.PASSIVE_NO_INITIALIZE).has_changes()
               for rel in _linking(object_mapper(obj)))


@functools.cache
def _linking(mapper: Mapper[Any]) -> tuple[Any, ...]:
    """The writable relationships of ``mapper`` through temporal association tables,
    one per table and direction."""
    seen: dict[tuple[Any, ...], Any] = {}
    for rel in mapper.relationships:
        if rel.secondary is not None and is_temporal_table(rel.secondary) and not rel.viewonly:
            seen.setdefault((rel.secondary, *rel.synchronize_pairs), rel)
    return tuple(seen.values())


# Installed with the first temporal table (hooks.py): a process of plain models
# keeps SQLAlchemy's own join and many-to-many code.
hooks.when_installed(lambda: _compat.extend_secondary_joins(_with_period))
hooks.when_installed(lambda: _compat.route_secondary_writes(is_temporal_table, _write_links))

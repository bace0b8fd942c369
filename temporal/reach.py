"""Can a statement or a mapper involve a temporal table? (So plain ones pay nothing.)

Once a temporal model exists, the session listeners run for every ORM
statement and flush, plain models' included. They use these answers to step
aside at once when nothing temporal can be involved:

* a **mapper** reaches temporal tables when one of its tables (its own, a
  joined-table parent's, a subclass's that a polymorphic load may read inline)
  is temporal, when one of its column attributes is a SQL expression rather
  than a plain column (``column_property(select(...))`` may read any table), or
  when a relationship it loads inline (``lazy="joined"``, also its secondary
  table) leads to a mapper that does;
* a **statement** may read temporal tables when its SQL cache key (which names
  every table and mapper the statement uses, loader options' paths included,
  and which SQLAlchemy computes for its compiled cache anyway, once per
  statement) holds a temporal table or a mapper that reaches one. A statement
  without a cache key always counts as temporal.

The answers are conservative: "maybe" runs the listener's full path, as before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.orm import Mapper

from temporal import _compat, hooks
from temporal.model import is_temporal_table

_INLINE_LOADS = ("joined", "subquery", "selectin", "immediate")
_LIMIT = 5000  # distinct statement shapes remembered

_mappers: dict[Mapper[Any], bool] = {}
_statements: dict[Any, bool] = {}


def mapper_reaches_temporal(mapper: Mapper[Any]) -> bool:
    found = _mappers.get(mapper)
    if found is None:
        found = _mappers[mapper] = _reaches(mapper, set())
    return found


def statement_may_read_temporal(statement: Any) -> bool:
    key = _compat.cache_key(statement)
    if key is None:
        return True
    found = _statements.get(key)
    if found is None:
        if len(_statements) >= _LIMIT:
            _statements.clear()
        found = _statements[key] = any(_temporal_part(part) for part in _flatten(key))
    return found


@hooks.on(Mapper, "after_configured")
def forget() -> None:
    """Drop remembered answers (mappers were added or changed)."""
    _mappers.clear()
    _statements.clear()


def _temporal_part(part: Any) -> bool:
    if isinstance(part, Table):
        return is_temporal_table(part)
    if isinstance(part, Mapper):
        return mapper_reaches_temporal(part)
    return False


def _flatten(key: Any) -> Any:
    stack = [key]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            stack.extend(item)
        else:
            yield item


def _reaches(mapper: Mapper[Any], seen: set[Mapper[Any]]) -> bool:
    if mapper in seen:
        return False
    seen.add(mapper)
    related = [*mapper.iterate_to_root(), *mapper.self_and_descendants]
    for level in related:
        if any(is_temporal_table(t) for t in level.tables):
            return True
        if not isinstance(level.local_table, Table):
            return True  # mapped to a join or a SELECT: take no chances
        for prop in level.column_attrs:
            for col in prop.columns:
                if not isinstance(col, Column) or is_temporal_table(col.table):
                    return True
        for rel in level.relationships:
            if rel.lazy not in _INLINE_LOADS:
                continue  # read by a statement of its own, which gets its own answer
            if rel.secondary is not None and (
                    not isinstance(rel.secondary, Table) or is_temporal_table(rel.secondary)):
                return True
            if _reaches(rel.mapper, seen):
                return True
    return False

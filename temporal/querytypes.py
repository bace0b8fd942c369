"""The types of a SQLite query's result columns, where they are plain table columns.

SQLite reports no types for a query's columns (PostgreSQL does, and
``--query`` exports use them). So a SQLite ``--query`` column that sqlglot can
trace to a column of a temporal table the query reads - ``SELECT id, e.amount
AS total FROM events e JOIN ...``, ``SELECT *``, ``SELECT e.*`` - gets that
column's type, and its values their canonical text as in a table export. Any
other column (an expression, an aggregate, a column of a subquery, a CTE or a
plain table) has no type: its values are spelled by their Python type
(``canonical``), as the README says.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy import types as sqltypes

from temporal.model import CREATED_AT, EXPIRED_AT

Types = list[sqltypes.TypeEngine[Any] | None]


def result_types(body: str, columns: list[str], tables: dict[str, Table]) -> Types:
    """For each result column of the SELECT ``body``, the type of the table column it
    is (``tables``: the temporal tables by name), or None."""
    untyped: Types = [None] * len(columns)
    try:
        import sqlglot
        from sqlglot import expressions as exp

        tree = sqlglot.parse_one(body, read="sqlite")
    except Exception:  # the sandbox parsed it; anything else is simply untyped
        return untyped
    if not isinstance(tree, exp.Select):
        return untyped
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    known = {name.lower(): table for name, table in tables.items()}
    scope: list[tuple[str, Table | None]] = []  # (alias, table) of each FROM item
    start = tree.args.get("from") or tree.args.get("from_")  # the key's name in sqlglot 27+
    items = [start.this] if start is not None else []
    items += [join.this for join in tree.args.get("joins") or []]
    for item in items:
        table = None
        if isinstance(item, exp.Table) and not item.db and item.name.lower() not in ctes:
            table = known.get(item.name.lower())
        scope.append((item.alias_or_name.lower(), table))

    def data(table: Table) -> list[Any]:
        return [c for c in table.c if c.name not in (CREATED_AT, EXPIRED_AT)]

    found: Types = []
    for projection in tree.expressions:
        value = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(value, exp.Star):  # every column of every FROM item
            if any(table is None for _, table in scope):
                return untyped
            found += [c.type for _, table in scope if table is not None for c in data(table)]
        elif isinstance(value, exp.Column) and isinstance(value.this, exp.Star):
            table = dict(scope).get(value.table.lower())
            if table is None:
                return untyped
            found += [c.type for c in data(table)]
        elif isinstance(value, exp.Column):
            found.append(_column_type(value.table.lower(), value.name.lower(), scope, data))
        else:
            found.append(None)
    return found if len(found) == len(columns) else untyped


def _column_type(alias: str, name: str, scope: list[tuple[str, Table | None]],
                 data: Any) -> sqltypes.TypeEngine[Any] | None:
    if alias:
        candidates = [table for a, table in scope if a == alias]
    elif any(table is None for _, table in scope):
        return None  # a subquery or plain table might hold the name too
    else:
        candidates = [table for _, table in scope
                      if any(c.name.lower() == name for c in data(table))]
    if len(candidates) != 1 or candidates[0] is None:
        return None
    for column in data(candidates[0]):
        if column.name.lower() == name:
            return column.type  # type: ignore[no-any-return]
    return None

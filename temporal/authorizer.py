"""The SQLite side of the ``--query`` sandbox: sqlglot's parse and SQLite's authorizer.

sqlglot proves the text is one SELECT in SQLite's dialect; the driver runs
one statement per call. While the query is prepared and read, SQLite's
authorizer callback is asked about every action: it allows a ``SELECT``, a
recursive CTE, reads through the as-of views (``temp.<table>``, which read
``main.<table>`` and its archive), reads of what the user named unversioned,
and calls of the functions on :data:`SQLITE_ALLOWED` (core functions that read
their arguments and nothing else). Everything else - another schema's
spelling of a temporal table (``main.t``), an archive, a view, a plain table,
``sqlite_master``, any write, ``ATTACH``, ``PRAGMA``, ``load_extension`` - is
denied, and the refusal says why and what to write instead. The connection
also runs with ``PRAGMA query_only``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, MetaData, Table

from temporal.catalog import ARCHIVE_SUFFIX, temporal_shape
from temporal.sandbox import (
    VIEW,
    QueryError,
    Sandboxed,
    first_line,
    per_run_refusal,
    statement_text,
)

# SQLite core functions that read their arguments and nothing else.
SQLITE_ALLOWED = frozenset("""
abs char coalesce concat concat_ws format glob hex ifnull iif if instr length like likelihood
likely lower ltrim max min nullif octet_length printf quote replace round rtrim sign soundex
substr substring trim typeof unhex unicode unlikely upper zeroblob regexp
date time datetime julianday unixepoch strftime timediff
avg count group_concat string_agg sum total median
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2
mod pi pow power radians sin sinh sqrt tan tanh trunc
json json_array json_array_length json_extract json_insert json_object json_patch json_remove
json_replace json_set json_type json_valid json_quote json_group_array json_group_object
json_each json_tree json_error_position json_pretty jsonb jsonb_array jsonb_extract
jsonb_insert jsonb_object jsonb_patch jsonb_remove jsonb_replace jsonb_set
jsonb_group_array jsonb_group_object -> ->>
""".split())  # noqa: SIM905 - a list to read


# Table-valued functions that compute rows from their arguments alone.
SQLITE_TABLE_FUNCTIONS = frozenset({"json_each", "json_tree", "jsonb_each", "jsonb_tree"})


def _sqlite_tree(body: str) -> None:
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(body, read="sqlite") if s is not None]
    except sqlglot.errors.SqlglotError as error:
        raise QueryError(f"the query is not valid SQL: {str(error).splitlines()[0]}") from None
    if len(statements) != 1:
        raise QueryError("the query must be exactly one SELECT statement; it holds "
                         f"{len(statements)} statements")
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise QueryError(f"the query must be a SELECT, not {statement.key.upper()}")
    for node in statement.walk():
        if isinstance(node, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
            raise QueryError(f"the query holds a data-modifying {node.key.upper()}")
        shown = _per_run(node)
        if shown is not None:
            raise per_run_refusal(shown)


# SQLite's date and time functions: 'now', no time at all, or a conversion through the
# machine's time zone read the clock or the machine, not the data.
_SQLITE_CLOCK_FUNCTIONS = frozenset({"date", "time", "datetime", "julianday", "unixepoch",
                                     "strftime", "timediff"})
_SQLITE_PER_RUN_WORDS = frozenset({"now", "localtime", "utc"})


def _per_run(node: Any) -> str | None:
    """What in ``node`` answers differently from run to run (None: nothing)."""
    from sqlglot import exp

    if isinstance(node, (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime,
                         exp.CurrentDatetime)):
        return node.sql(dialect="sqlite")
    if isinstance(node, exp.Literal) and node.is_string and \
            node.this.strip().lower() in _SQLITE_PER_RUN_WORDS and \
            isinstance(node.parent, exp.Func):
        return f"the date-function argument '{node.this}'"
    if isinstance(node, exp.Func):
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if name in _SQLITE_CLOCK_FUNCTIONS and not list(node.iter_expressions()):
            return f"{name}() (the time now)"
    return None


class _Authorizer:
    """SQLite's authorizer callback: reads through the as-of views, allow-listed functions."""

    def __init__(self, shadows: dict[str, Table], unversioned: set[str], views: set[str]
                 ) -> None:
        self.shadows = shadows
        self.unversioned = unversioned
        self.views = views
        self.refusal: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None,
                 inner: str | None) -> int:
        reason = self._reason(action, arg1, arg2, db, inner)
        if reason is None:
            return sqlite3.SQLITE_OK
        self.refusal = self.refusal or reason
        return sqlite3.SQLITE_DENY

    def _reason(self, action: int, table: str | None, arg2: str | None, db: str | None,
                inner: str | None) -> str | None:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return None
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in SQLITE_ALLOWED:
                return None
            return (f"function {arg2} is not on the list of SQLite functions an export query "
                    "may call (core functions that only read their arguments)")
        if action != sqlite3.SQLITE_READ or table is None:
            return "the query may only read (SELECT); it tried to do something else"
        if inner is not None and inner in self.unversioned and db == "main" and (
                table in self.shadows or table.removesuffix(ARCHIVE_SUFFIX) in self.shadows):
            return (f"view {inner} reads the temporal table {table} as it is now, not as of "
                    f"the export's moment (naming the view unversioned does not make {table} "
                    f"unversioned): query {table.removesuffix(ARCHIVE_SUFFIX)} itself")
        if inner is not None and (inner in self.shadows or inner in self.unversioned):
            return None  # inside an as-of view, or a view the user named unversioned
        if db == "temp" and table in self.shadows:
            return None
        if table in SQLITE_TABLE_FUNCTIONS:
            return None
        if db == "main" and table in self.unversioned:
            return None
        if inner is not None:
            return (f"{inner} is a view: it reads its tables as they are now, not as of the "
                    f"export's moment; query the tables it reads; pass --unversioned {inner} to "
                    "read it as it is now (the manifest records it, and a later export may "
                    "differ)")
        hint = f"; pass --unversioned {table} to read it as it is now (the manifest records " \
               "it, and a later export may differ)"
        if table in self.shadows:
            return (f"{db}.{table} is spelled with its schema, which reads its current rows, "
                    f"not those as of the export's moment: write {table} without the schema")
        if table.endswith(ARCHIVE_SUFFIX) and table[:-len(ARCHIVE_SUFFIX)] in self.shadows:
            base = table[:-len(ARCHIVE_SUFFIX)]
            return (f"{table} is the archive of {base}, which changes as archival runs: read "
                    f"{base}, which includes its archived versions as of the export's moment")
        if table in self.views:
            return (f"{table} is a view: it reads its tables as they are now, not as of the "
                    "export's moment; query the tables it reads" + hint)
        return f"{table} is not temporal: its past was never recorded" + hint


def _unqualified(body: str, shadows: dict[str, Table]) -> str:
    """``body`` with ``main.<temporal table>`` spelled without ``main.``.

    ``main.customers`` names the table itself; the unqualified name reads its as-of
    view (``temp`` is searched first), so the qualifier is cut out of the text, found
    by sqlglot's tokenizer (never inside a string or a comment). What the rewritten
    text reads is checked afterwards like any query.
    """
    from sqlglot import TokenType
    from sqlglot.dialects.sqlite import SQLite
    from sqlglot.errors import SqlglotError

    try:
        tokens = SQLite().tokenize(body)
    except SqlglotError:
        return body  # _sqlite_tree says what is wrong with it
    names = (TokenType.VAR, TokenType.IDENTIFIER)
    shadowed = {name.lower() for name in shadows}
    cuts = [(tokens[i].start, tokens[i + 2].start)
            for i in range(len(tokens) - 2)
            if tokens[i].token_type in names and tokens[i].text.lower() == "main"
            and tokens[i + 1].token_type == TokenType.DOT
            and tokens[i + 2].token_type in names and tokens[i + 2].text.lower() in shadowed
            and (i == 0 or tokens[i - 1].token_type != TokenType.DOT)]
    for start, end in reversed(cuts):
        body = body[:start] + body[end:]
    return body


def prepare(conn: Connection, query: str, shadows: dict[str, Table],
                   unversioned: Sequence[str] = ()) -> tuple[Sandboxed, _Authorizer]:
    """Check ``query`` and install the authorizer on ``conn`` (remove it with ``release``).

    ``conn`` holds the as-of views and ``query_only`` in its open transaction.
    """
    body = _unqualified(statement_text(query), shadows)
    _sqlite_tree(body)
    rows = conn.exec_driver_sql(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')").all()
    kinds = {name: kind for name, kind in rows}
    for name in unversioned:
        if name not in kinds:
            raise QueryError(f"--unversioned {name}: no table or view of that name")
        if name in shadows or (kinds[name] == "table" and temporal_shape(
                Table(name, MetaData(), autoload_with=conn)) is not None):
            raise QueryError(f"--unversioned {name}: {name} is temporal, so it is read as of "
                             "the export's moment; name only plain tables or views")
    guard = _Authorizer(shadows, set(unversioned),
                        {n for n, k in kinds.items() if k == "view"})
    raw: Any = conn.connection.driver_connection
    for name in ("json_each", "json_tree"):
        # Their first use registers them in the schema, which the guard would deny.
        raw.execute(f"SELECT * FROM {name}('[]')").fetchall()
    wrapped = f"SELECT * FROM (\n{body}\n) AS {VIEW}"
    raw.set_authorizer(guard)
    try:
        cursor = raw.execute(wrapped + " LIMIT 0")
        columns = [d[0] for d in cursor.description]
        cursor.close()
    except (sqlite3.Error, sqlite3.Warning) as error:
        raw.set_authorizer(None)
        raise QueryError(guard.refusal or f"the query failed: {first_line(error)}") from None
    order = ", ".join(str(i) for i in range(1, len(columns) + 1))
    return Sandboxed(sql=f"{wrapped} ORDER BY {order}", columns=columns,
                     unversioned=sorted(unversioned), raw_cursor=True), guard


def release(conn: Connection) -> None:
    raw: Any = conn.connection.driver_connection
    raw.set_authorizer(None)

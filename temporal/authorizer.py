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
    clash_message,
    first_line,
    order_refusal,
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
        order = _storage_order(node)
        if order is not None:
            raise order_refusal(order, "group_concat(x) FROM (SELECT x ... ORDER BY x), or "
                                "ORDER BY before LIMIT")


# Aggregates whose answer is in the order rows arrive (SQLite keeps no DISTINCT order).
_SQLITE_ORDER_SENSITIVE = ("GroupConcat", "JSONArrayAgg", "JSONObjectAgg")


def _storage_order(node: Any) -> str | None:
    """Why ``node`` answers in the order rows are stored (None: it does not)."""
    from sqlglot import exp

    if isinstance(node, exp.Select):
        if (node.args.get("limit") or node.args.get("offset")) and not node.args.get("order"):
            return "LIMIT/OFFSET without ORDER BY"
        return None
    if type(node).__name__ in _SQLITE_ORDER_SENSITIVE and \
            not isinstance(node.this, exp.Order):
        window = node.parent if isinstance(node.parent, exp.Window) else None
        if window is not None and (window.args.get("order") or window.args.get("alias")):
            return None
        if _from_ordered_subquery(node.find_ancestor(exp.Select)):
            return None  # SELECT group_concat(x) FROM (SELECT ... ORDER BY ...): SQLite's idiom
        return f"{node.sql(dialect='sqlite').split('(', 1)[0].lower()}() without ORDER BY"
    return None


def _from_ordered_subquery(select: Any) -> bool:
    """Does ``select`` read one ordered subquery and nothing else?"""
    from sqlglot import exp

    if select is None or select.args.get("joins"):
        return False
    source = select.args.get("from_") or select.args.get("from")
    inner = source.this if source is not None else None
    return isinstance(inner, exp.Subquery) and isinstance(inner.this, exp.Select) and \
        bool(inner.this.args.get("order"))


# SQLite's date and time functions: 'now', no time at all, or a conversion through the
# machine's time zone read the clock or the machine, not the data.
_SQLITE_CLOCK_FUNCTIONS = ("date", "time", "datetime", "julianday", "unixepoch", "strftime",
                           "timediff")
_SQLITE_PER_RUN_WORDS = frozenset({"now", "localtime", "utc"})


def _per_run(node: Any) -> str | None:
    """What in ``node`` answers differently from run to run, seen in the text (None:
    nothing). Arguments are checked as the query runs (:class:`_Clockless`)."""
    from sqlglot import exp

    if isinstance(node, (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime,
                         exp.CurrentDatetime)):
        return node.sql(dialect="sqlite")
    if isinstance(node, exp.Func):
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if name in _SQLITE_CLOCK_FUNCTIONS and not list(node.iter_expressions()):
            return f"{name}() (the time now)"
    return None


class _Clockless:
    """SQLite's date and time functions for the query, refusing the clock and the zone.

    A time value 'now' or a 'localtime'/'utc' modifier can reach a date function by
    any expression (``'n' || 'ow'``, a subquery, a column's data), so the arguments
    are checked as each call is made: the query's calls of ``date(...)`` and its kin
    are rewritten (at sqlglot's tokens) to ``temporal_date(...)``, functions of this
    connection that refuse such arguments and answer every other call with SQLite's
    built-in itself, on a private in-memory connection. A refused call fails the read
    with the reason, as the authorizer's refusals do. (SQLite's built-ins are never
    replaced on the connection, which goes back to the pool as it came.)
    """

    PREFIX = "temporal_"

    def __init__(self, guard: _Authorizer) -> None:
        self.guard = guard
        self.real = sqlite3.connect(":memory:", check_same_thread=False)
        self.names = [n for n in _SQLITE_CLOCK_FUNCTIONS if self._known(n)]

    def _known(self, name: str) -> bool:
        try:
            self.real.execute(f"SELECT {name}('2000-01-01', '2000-01-01')")
        except sqlite3.OperationalError:
            return False  # an older SQLite (timediff is 3.43)
        return True

    def rewrite(self, body: str) -> str:
        """``body`` calling the checked functions in place of SQLite's date functions."""
        from sqlglot import TokenType

        tokens = _tokens(body)
        calls = [t for i, t in enumerate(tokens[:-1])
                 if t.text.lower() in self.names
                 and tokens[i + 1].token_type == TokenType.L_PAREN
                 and (i == 0 or tokens[i - 1].token_type != TokenType.DOT)]
        for token in reversed(calls):
            body = body[:token.start] + self.PREFIX + token.text.lower() + body[token.end + 1:]
        return body

    def install(self, raw: Any) -> None:
        for name in self.names:
            raw.create_function(self.PREFIX + name, -1, self._function(name),
                                deterministic=True)

    def allowed(self, name: str) -> bool:
        return name.startswith(self.PREFIX) and name[len(self.PREFIX):] in self.names

    def close(self) -> None:
        self.real.close()

    def _function(self, name: str) -> Any:
        times = slice(1, None) if name == "strftime" else slice(None)

        def call(*args: Any) -> Any:
            if not args[times] and name != "timediff":
                self._refuse(f"{name}() (the time now)")
            for value in args[times]:
                if isinstance(value, str) and value.strip().lower() in _SQLITE_PER_RUN_WORDS:
                    self._refuse(f"the value '{value}' given to {name}()")
            marks = ", ".join("?" * len(args))
            return self.real.execute(f"SELECT {name}({marks})", args).fetchone()[0]
        return call

    def _refuse(self, what: str) -> None:
        message = str(per_run_refusal(what))
        self.guard.refusal = self.guard.refusal or message
        raise ValueError(message)


class _Authorizer:
    """SQLite's authorizer callback: reads through the as-of views, allow-listed functions."""

    def __init__(self, shadows: dict[str, Table], unversioned: set[str], views: set[str]
                 ) -> None:
        # SQLite's names are case-insensitive: compared folded, shown as written.
        self.shadows = {name.lower(): table for name, table in shadows.items()}
        self.unversioned = {name.lower() for name in unversioned}
        self.views = {name.lower() for name in views}
        self.refusal: str | None = None
        self.clock: _Clockless | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None,
                 inner: str | None) -> int:
        reason = self._reason(action, arg1, arg2, db, inner)
        if reason is None:
            return sqlite3.SQLITE_OK
        self.refusal = self.refusal or reason
        return sqlite3.SQLITE_DENY

    def _reason(self, action: int, written: str | None, arg2: str | None, db: str | None,
                inner_written: str | None) -> str | None:
        table = written.lower() if written is not None else None
        inner = inner_written.lower() if inner_written is not None else None
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return None
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in SQLITE_ALLOWED or (self.clock is not None and self.clock.allowed(name)):
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

    tokens = _tokens(body)
    names = (TokenType.VAR, TokenType.IDENTIFIER)
    shadowed = {name.lower() for name in shadows}
    cuts = [i for i in range(len(tokens) - 2)  # main . <table>, not x.main.<table>
            if tokens[i].token_type in names and tokens[i].text.lower() == "main"
            and tokens[i + 1].token_type == TokenType.DOT
            and tokens[i + 2].token_type in names and tokens[i + 2].text.lower() in shadowed
            and (i == 0 or tokens[i - 1].token_type != TokenType.DOT)]
    clash = sorted({tokens[i + 2].text.lower() for i in cuts} & _local_names(body)) \
        if cuts else []
    if clash:  # without main. the name would mean the query's own CTE or alias
        raise QueryError(clash_message(f"main.{clash[0]}", clash[0]))
    for i in reversed(cuts):
        body = body[:tokens[i].start] + body[tokens[i + 2].start:]
    return body


def _tokens(body: str) -> list[Any]:
    """sqlglot's SQLite tokens of ``body`` (none if it cannot tokenize it: the parse in
    ``_sqlite_tree`` then says what is wrong)."""
    from sqlglot.dialects.sqlite import SQLite
    from sqlglot.errors import SqlglotError

    try:
        return list(SQLite().tokenize(body))
    except SqlglotError:
        return []


def _local_names(body: str) -> set[str]:
    """The names a query gives itself: CTEs and aliases (not ``t AS t``), folded."""
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(body, read="sqlite") if s is not None]
    except sqlglot.errors.SqlglotError:
        return set()  # _sqlite_tree says what is wrong with it
    names: set[str] = set()
    for statement in statements:
        for cte in statement.find_all(exp.CTE):
            names.add(cte.alias.lower())
        for alias in statement.find_all(exp.TableAlias):
            owner = alias.parent
            if isinstance(owner, exp.Table) and owner.name.lower() == alias.name.lower():
                continue  # FROM main.t AS t: the table itself
            if not isinstance(owner, exp.CTE):
                names.add(alias.name.lower())
    return names


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
    guard.clock = _Clockless(guard)
    guard.clock.install(raw)
    wrapped = f"SELECT * FROM (\n{guard.clock.rewrite(body)}\n) AS {VIEW}"
    raw.set_authorizer(guard)
    try:
        cursor = raw.execute(wrapped + " LIMIT 0")
        columns = [d[0] for d in cursor.description]
        cursor.close()
    except (sqlite3.Error, sqlite3.Warning) as error:
        release(conn, guard)
        raise QueryError(guard.refusal or f"the query failed: {first_line(error)}") from None
    order = ", ".join(str(i) for i in range(1, len(columns) + 1))
    return Sandboxed(sql=f"{wrapped} ORDER BY {order}", columns=columns,
                     unversioned=sorted(unversioned), raw_cursor=True), guard


def release(conn: Connection, guard: _Authorizer | None = None, *,
            functions: bool = True) -> None:
    """Remove the authorizer (and, unless ``functions`` is false - the rewritten query
    still runs - close what answers the checked date functions)."""
    raw: Any = conn.connection.driver_connection
    raw.set_authorizer(None)
    if functions and guard is not None and guard.clock is not None:
        guard.clock.close()
        guard.clock = None

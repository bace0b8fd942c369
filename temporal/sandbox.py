"""The ``--query`` sandbox: one SELECT that sees temporal tables as of T and changes nothing.

An export's query is text from a user who may be connected as a superuser, so
"read-only" has to hold by construction, not by hope. Three layers, each one
enough to stop the attacks the others are meant for:

* **A real parser proves it is one SELECT.** On PostgreSQL the text goes
  through pglast (PostgreSQL's own parser): exactly one statement, a
  ``SELECT`` (or ``VALUES``/``TABLE``), with no ``SELECT INTO``, no locking
  clause (``FOR UPDATE``/``SHARE``), no data-modifying ``WITH`` (``INSERT``/
  ``UPDATE``/``DELETE``/``MERGE`` anywhere in the tree) and no ``$1``
  parameters. On SQLite sqlglot does the same for the SQLite dialect.
* **The protocol cannot carry a second statement.** On PostgreSQL the query is
  sent once, through the extended protocol (a prepared statement), as the body
  of a temporary view (``pg_temp.temporal_query``); the export then reads that
  view with a statement the library wrote. SQLite's driver refuses more than
  one statement per call.
* **The server checks every object it resolved.** PostgreSQL itself resolves
  names: the view's dependencies (``pg_depend``) and each table name in the
  tree (``to_regclass``) list every relation, function and operator the query
  reaches, whatever the spelling (quoted, schema-qualified, ``TABLE t``,
  inside ``EXISTS``/subqueries/CTEs). On SQLite the authorizer callback sees
  every table read (with the view it came through) and every function call,
  and denies everything that is not a read (``temporal.authorizer``).

Relations: a temporal table of the default schema is read through a temporary
view of the same name that shows it as of T (archived versions included); any
other spelling of it (``public.t``, ``main.t``), its ``<table>_archive``, a
view, or a plain table is refused with a message saying what to write
instead, unless the user names that plain table or view as **unversioned**
(read as it is now; the manifest records it). Temporal tables cannot be named
unversioned.

Functions follow an **allow-list rule** rather than a deny-list: a function
may be called only if it is built into the server and declared not to change
anything. On PostgreSQL that means created with the server (oid below
``FirstNormalObjectId``, so no user or extension function) and ``IMMUTABLE``
or ``STABLE``, except the few stable ones that read tables by name
(``table_to_xml`` and its kin); on SQLite a fixed list of core functions. A
deny-list of dangerous functions could never be complete (every extension,
every release adds some); volatility is the server's own declaration that a
function may have side effects, and refusing what we do not know is the safe
default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, MetaData, Table, inspect

from temporal import _backend
from temporal.archival import reads_archive_apart
from temporal.catalog import ARCHIVE_SUFFIX, archive_name, temporal_shape
from temporal.errors import ExportError
from temporal.model import CREATED_AT, EXPIRED_AT

VIEW = "temporal_query"
# Objects with an oid below this were created with the server (initdb), not
# by a user or an extension (PostgreSQL's FirstNormalObjectId).
_FIRST_NORMAL_OID = 16384

# STABLE built-ins that read whole tables or schemas by name, past the as-of views.
PG_DENIED = frozenset({
    "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
    "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
    "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
    "cursor_to_xmlschema", "ts_stat",
})

# STABLE built-ins whose answer comes from the moment, the session, the connecting user or
# the server's state rather than from the data: a query calling one could never be exported
# twice alike, so its export could never verify.
PG_PER_RUN = frozenset({
    "now", "statement_timestamp", "transaction_timestamp", "pg_backend_pid", "pg_trigger_depth",
    "current_setting", "current_database", "current_schema", "current_schemas", "current_user",
    "session_user", "getpgusername", "row_security_active", "pg_conf_load_time",
    "pg_postmaster_start_time", "pg_my_temp_schema", "pg_is_other_temp_schema",
    "pg_listening_channels", "pg_cursor", "pg_prepared_statement", "pg_show_all_settings",
    "pg_settings_get_flags", "pg_relation_filenode", "pg_relation_filepath",
    "pg_filenode_relation", "pg_tablespace_location", "pg_tablespace_databases",
    "pg_column_compression", "pg_available_extensions", "pg_available_extension_versions",
    "pg_extension_update_paths", "pg_config", "version", "mxid_age", "obj_description",
    "col_description", "shobj_description", "pg_describe_object", "pg_identify_object",
    "pg_identify_object_as_address", "pg_get_replication_slots", "get_current_ts_config",
    "pg_client_encoding",
})
_PG_PER_RUN_PREFIXES = ("pg_stat_get_", "pg_current_", "txid_current", "inet_client_",
                        "inet_server_", "has_", "pg_has_role", "pg_get_", "to_reg")
_PG_PER_RUN_KEEP = frozenset({"pg_get_keywords"})


def _pg_per_run(name: str, arguments: int) -> bool:
    """Does the built-in ``name`` answer differently from run to run?"""
    name = name.lower()
    if name in _PG_PER_RUN_KEEP:
        return False
    if name == "age":  # age(x) counts from today (or from the current transaction id)
        return arguments == 1
    return name in PG_PER_RUN or name.startswith(_PG_PER_RUN_PREFIXES)


# Aggregates and window functions whose answer depends on the order rows arrive in:
# without an ORDER BY that is the order they are stored in, which moves as history is
# written (an expired version is rewritten elsewhere), so a re-export would differ.
_PG_ORDER_SENSITIVE = frozenset({
    "array_agg", "string_agg", "json_agg", "jsonb_agg", "json_agg_strict", "jsonb_agg_strict",
    "json_object_agg", "jsonb_object_agg", "json_object_agg_strict", "jsonb_object_agg_strict",
    "json_object_agg_unique", "jsonb_object_agg_unique", "xmlagg",
})
_PG_ORDER_SENSITIVE_WINDOWS = frozenset({
    "row_number", "first_value", "last_value", "nth_value", "lag", "lead", "ntile",
})


def _pg_order_problem(node: Any) -> str | None:
    """Why ``node`` (a FuncCall or a SelectStmt) answers in storage order (None: it does not)."""
    from pglast import ast

    if isinstance(node, ast.SelectStmt):
        if (node.limitCount is not None or node.limitOffset is not None) and not node.sortClause:
            return "LIMIT/OFFSET without ORDER BY"
        if node.distinctClause and node.distinctClause != (None,) and not node.sortClause:
            return "DISTINCT ON without ORDER BY"
        return None
    name = _qualified(node.funcname or ())[1].lower()
    over = node.over
    if over is not None:
        if over.orderClause or over.name or over.refname:
            return None  # ordered (a named window is not inspected)
        if name in _PG_ORDER_SENSITIVE_WINDOWS or name in _PG_ORDER_SENSITIVE:
            return f"{name}() OVER a window without ORDER BY"
        return None
    if name in _PG_ORDER_SENSITIVE and not node.agg_order and not node.agg_distinct:
        return f"{name}() without ORDER BY"
    return None


def order_refusal(shown: str, example: str = "array_agg(x ORDER BY x)") -> QueryError:
    return QueryError(f"{shown} takes rows in the order they are stored, which changes as "
                      "history is written, so this export could never be reproduced or "
                      f"verified; add an ORDER BY (e.g. {example})")


def per_run_refusal(shown: str) -> QueryError:
    return QueryError(f"{shown} answers differently from run to run (it reads the clock, the "
                      "session or the server's state, not the data), so this export could "
                      "never be reproduced or verified; write the value as a literal (a moment: "
                      "the as-of time, say)")

class QueryError(ExportError):
    """A ``--query`` that the sandbox refuses (it could write, escape, or read the present)."""


@dataclass
class Sandboxed:
    """A checked query: the statement that reads it, its columns, what it may read now."""

    sql: str
    columns: list[str]
    unversioned: list[str] = field(default_factory=list)
    raw_cursor: bool = False  # SQLite: run on the driver connection (no bind markers parsed)


# -- the as-of views ----------------------------------------------------------------


def shadow_tables(conn: Connection, at: datetime) -> dict[str, Table]:
    """Temporary views named like every temporal table of the default schema, as of ``at``.

    Unqualified names in a query then read the past; the timestamp is rendered
    by the library from a datetime, identifiers are quoted. Returns the
    shadowed tables by name.
    """
    dialect = conn.dialect.name
    quote = conn.dialect.identifier_preparer.quote
    inspector = inspect(conn)
    schema = inspector.default_schema_name or "main"
    valid = "WHERE " + _backend.valid_at_text(dialect, at)
    names = inspector.get_table_names()
    shadows: dict[str, Table] = {}
    for name in names:
        if name.endswith(ARCHIVE_SUFFIX) and name[:-len(ARCHIVE_SUFFIX)] in names:
            continue  # read through its table's view
        table = Table(name, MetaData(), autoload_with=conn)
        if temporal_shape(table) is None:
            continue
        data = ", ".join(quote(c.name) for c in table.c if c.name not in (CREATED_AT, EXPIRED_AT))
        sources = [f"{quote(schema)}.{quote(name)}"]  # on PostgreSQL, archive included
        if reads_archive_apart(conn, name):
            sources.append(f"{quote(schema)}.{quote(archive_name(name))}")
        body = " UNION ALL ".join(f"SELECT {data} FROM {source} {valid}" for source in sources)
        if len(sources) > 1:
            # Not a bare compound: SQLite's count-of-view optimisation would turn a
            # count(*) of it into a read of the view itself with no schema and no
            # column, which the SQLite authorizer cannot tell from a read of the table.
            body = f"SELECT * FROM ({body})"
        conn.exec_driver_sql(f"CREATE TEMP VIEW {quote(name)} AS {body}")
        shadows[name] = table
    return shadows


def statement_text(query: str) -> str:
    body = query.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    if not body:
        raise QueryError("the query is empty")
    return body


# -- PostgreSQL --------------------------------------------------------------------


@dataclass
class _Tree:
    functions: set[tuple[str | None, str]] = field(default_factory=set)
    relations: set[tuple[str | None, str]] = field(default_factory=set)
    ctes: set[str] = field(default_factory=set)


def _pg_tree(body: str, what: str = "the query", per_run: bool = True) -> _Tree:
    """Parse with PostgreSQL's own parser; refuse anything but one plain SELECT.

    ``per_run``: refuse values that change from run to run too (not inside a view the
    user named unversioned: that one is read as it is now by choice).
    """
    import pglast
    from pglast import ast
    from pglast.visitors import Visitor

    try:
        statements = pglast.parse_sql(body)
    except pglast.parser.ParseError as error:
        raise QueryError(f"{what} is not valid SQL: {error}") from None
    if len(statements) != 1:
        raise QueryError(f"{what} must be exactly one SELECT statement; it holds "
                         f"{len(statements)} statements")
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        raise QueryError(f"{what} must be a SELECT, not {_statement_name(statement)}")
    tree = _Tree()
    problems: list[str] = []

    class Walk(Visitor):
        def visit(self, ancestors: Any, node: Any) -> None:
            if isinstance(node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt,
                                 ast.MergeStmt)):
                problems.append(f"{what} holds a data-modifying {_statement_name(node)}")
            elif isinstance(node, ast.SelectStmt):
                order = _pg_order_problem(node) if per_run else None
                if order is not None:
                    problems.append(str(order_refusal(order)))
                if node.intoClause is not None:
                    problems.append("SELECT INTO creates a table; a query may only read")
                if node.lockingClause:
                    problems.append("a locking clause (FOR UPDATE / FOR SHARE) takes locks; "
                                    "a query may only read")
            elif isinstance(node, ast.ParamRef):
                problems.append("parameters ($1, ...) cannot be bound in an export query")
            elif isinstance(node, ast.FuncCall):
                schema, name = _qualified(node.funcname or ())
                tree.functions.add((schema, name))
                order = _pg_order_problem(node) if per_run else None
                if order is not None:
                    problems.append(str(order_refusal(order)))
                # Built-ins are pinned (never in pg_depend): judged by name and arity here.
                if per_run and schema in (None, "pg_catalog") and \
                        _pg_per_run(name, len(node.args or ())):
                    problems.append(str(per_run_refusal(f"{name}()")))
            elif per_run and isinstance(node, ast.A_Const) and \
                    isinstance(node.val, ast.String) and _pg_moment(node.val.sval, ancestors):
                # 'now', 'today'... read as a date or time become the moment of the run.
                problems.append(str(per_run_refusal(
                    f"'{node.val.sval}' as a date or time (cast it to text if it is text)")))
            elif per_run and isinstance(node, ast.TypeCast) and node.typeName is not None and \
                    _type_name(node.typeName) in _PG_OBJECT_ID_TYPES:
                # Object ids: the as-of views are new temporary objects on every run.
                problems.append(str(per_run_refusal(
                    f"a cast to {_type_name(node.typeName)} (an object id)")))
            elif per_run and isinstance(node, ast.SQLValueFunction):  # CURRENT_TIMESTAMP...
                op = getattr(node.op, "name", "SVFOP_CURRENT_TIME")
                shown = op.removeprefix("SVFOP_").removesuffix("_N")
                problems.append(str(per_run_refusal(shown)))
            elif isinstance(node, ast.RangeVar):
                tree.relations.add((node.schemaname, node.relname or ""))
            elif isinstance(node, ast.CommonTableExpr):
                tree.ctes.add(node.ctename or "")

    Walk()(statements)
    if problems:
        raise QueryError(problems[0])
    return tree


# PostgreSQL's special date/time inputs that depend on when they are read.
_PG_MOMENT_WORDS = frozenset({"now", "today", "tomorrow", "yesterday"})
_PG_TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "char", "name", "citext"})


_PG_OBJECT_ID_TYPES = frozenset({
    "oid", "regclass", "regtype", "regproc", "regprocedure", "regoper", "regoperator",
    "regrole", "regnamespace", "regcollation", "regconfig", "regdictionary"})
_PG_WORD = re.compile(rf"\b({'|'.join(sorted(_PG_MOMENT_WORDS))})\b", re.IGNORECASE)


def _type_name(name: Any) -> str:
    parts = [getattr(n, "sval", "") for n in name.names or ()]
    return str(parts[-1]) if parts else ""


def _pg_moment(value: str | None, ancestors: Any) -> bool:
    """Would PostgreSQL read the constant ``value`` as a moment of the run ('now', ...)?

    A constant cast (through any chain of casts) to anything but text, holding one of
    the words (also inside an array literal), is; an uncast one is when it is one of
    the words exactly (it may be coerced to a timestamp); a text is text.
    """
    from pglast import ast

    casts = []
    at = ancestors
    while at is not None and isinstance(at.node, ast.TypeCast):
        casts.append(_type_name(at.node.typeName) if at.node.typeName is not None else "")
        at = at.parent
    text = value or ""
    if not casts:
        return text.strip().lower() in _PG_MOMENT_WORDS
    if all(c in _PG_TEXT_TYPES for c in casts):
        return False
    return _PG_WORD.search(text) is not None


def _statement_name(node: Any) -> str:
    name = type(node).__name__.removesuffix("Stmt")
    return {"Insert": "INSERT", "Update": "UPDATE", "Delete": "DELETE", "Merge": "MERGE",
            "Transaction": "transaction control statement", "Copy": "COPY",
            "Explain": "EXPLAIN", "Do": "DO block", "Call": "CALL"}.get(name, f"{name} statement")


def _qualified(names: Sequence[Any]) -> tuple[str | None, str]:
    parts = [n.sval for n in names]
    return (parts[-2] if len(parts) > 1 else None, parts[-1])


def _pg_check_functions(conn: Connection, functions: Iterable[tuple[str | None, str]]) -> None:
    for schema, name in sorted(functions, key=lambda f: (f[0] or "", f[1])):
        shown = f"{schema}.{name}" if schema else name
        if name.lower() in PG_DENIED:
            raise QueryError(f"function {shown} reads tables by name, past the as-of views; "
                             "query the tables themselves")
        rows = conn.exec_driver_sql(
            "SELECT p.oid::bigint, p.provolatile FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE p.proname = %(name)s "
            "AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s::text)",
            {"name": name, "schema": schema}).all()
        for oid, volatility in rows:
            _pg_check_function(shown, oid, volatility)


def _pg_check_function(shown: str, oid: int, volatility: str) -> None:
    if oid >= _FIRST_NORMAL_OID:
        raise QueryError(f"function {shown} is not built into PostgreSQL (a user or an "
                         "extension made it, and it may change anything); a query may call "
                         "only built-in IMMUTABLE or STABLE functions")
    if volatility == "v":
        raise QueryError(f"function {shown} is VOLATILE: it may change something, or answer "
                         "differently each call; a query may call only built-in IMMUTABLE or "
                         "STABLE functions")


def pg_prepare(conn: Connection, query: str, shadows: dict[str, Table],
               unversioned: Sequence[str] = ()) -> Sandboxed:
    """Check ``query`` and create ``pg_temp.temporal_query`` from it (call before the snapshot).

    ``conn`` is in a transaction that already holds the as-of views; the caller commits.
    """
    body = _pg_unqualified(conn, statement_text(query), shadows)
    tree = _pg_tree(body)
    _pg_check_functions(conn, tree.functions)
    allowed = _pg_unversioned(conn, unversioned, shadows)
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        with raw.cursor() as cursor:
            # prepare=True: the extended protocol, which refuses a second statement.
            cursor.execute(f"CREATE TEMP VIEW {VIEW} AS\n{body}\n", prepare=True)
    except Exception as error:  # psycopg.Error; the transaction is rolled back by the caller
        if getattr(error, "sqlstate", None) == "42701":  # duplicate column
            raise QueryError(f"the query's output names a column twice ({first_line(error)}); "
                             "give each output column its own name with AS") from None
        raise QueryError(f"the query failed: {first_line(error)}") from None
    _pg_check_view(conn, f"pg_temp.{VIEW}", tree, shadows, allowed)
    columns = [row[0] for row in conn.exec_driver_sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = %(view)s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", {"view": f"pg_temp.{VIEW}"})]
    order = ", ".join(str(i) for i in range(1, len(columns) + 1))
    return Sandboxed(sql=f"SELECT * FROM pg_temp.{VIEW} ORDER BY {order}", columns=columns,
                     unversioned=sorted(unversioned))


def _pg_unqualified(conn: Connection, body: str, shadows: dict[str, Table]) -> str:
    """``body`` with the default schema's temporal tables spelled without their schema.

    ``public.customers`` (or ``test.public.customers``) names the table itself; the
    as-of view of the same name, in this session's temporary schema, is what the
    unqualified name reads, so the query is rewritten (PostgreSQL's own parser and
    pglast's deparser) to read that. Text without such a spelling is kept as written.
    What the rewritten text reads is checked afterwards like any query.
    """
    import pglast
    from pglast import ast
    from pglast.stream import RawStream
    from pglast.visitors import Visitor

    try:
        statements = pglast.parse_sql(body)
    except pglast.parser.ParseError:
        return body  # _pg_tree says what is wrong with it
    schema, database = conn.exec_driver_sql("SELECT current_schema(), current_database()").one()
    unqualified: set[str] = set()  # the tables whose spelling lost its schema
    local: set[str] = set()  # names the query itself gives: CTEs, aliases

    def names(parts: Sequence[Any]) -> list[str | None]:
        return [getattr(p, "sval", None) for p in parts]

    class Unqualify(Visitor):
        def visit(self, ancestors: Any, node: Any) -> None:
            if isinstance(node, ast.RangeVar) and node.relname in shadows and (
                    node.schemaname == schema and node.catalogname in (None, database)):
                node.schemaname = node.catalogname = None
                unqualified.add(node.relname)
            elif isinstance(node, ast.ColumnRef) and len(node.fields or ()) >= 3:
                parts = tuple(node.fields or ())
                fields = names(parts)
                # schema.table.column, or database.schema.table.column
                lead = 1 if len(fields) == 3 else 2
                prefix = [schema] if lead == 1 else [database, schema]
                if fields[:lead] == prefix and fields[lead] in shadows and len(fields) <= 4:
                    node.fields = parts[lead:]
                    unqualified.add(str(fields[lead]))
            elif isinstance(node, ast.CommonTableExpr):
                local.add(node.ctename or "")
            elif isinstance(node, ast.Alias) and not (
                    isinstance(ancestors.node, ast.RangeVar)
                    and ancestors.node.relname == node.aliasname):  # FROM t AS t: itself
                local.add(node.aliasname or "")

    Unqualify()(statements)
    clash = sorted(unqualified & local)
    if clash:  # without its schema the name would mean the query's own CTE or alias
        raise QueryError(clash_message(f"{schema}.{clash[0]}", clash[0]))
    return RawStream()(statements) if unqualified else body


def clash_message(spelled: str, name: str) -> str:
    return (f"{spelled} cannot be read as of the export's moment beside a CTE or an alias "
            f"named {name} (without its schema the name would mean that one): write {name} "
            "without the schema, and give the CTE or alias another name")


def first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _pg_unversioned(conn: Connection, names: Sequence[str], shadows: dict[str, Table]
                    ) -> dict[int, str]:
    """The relations the user named unversioned, by oid; refuse unknown or temporal ones."""
    allowed: dict[int, str] = {}
    for name in names:
        oid = conn.exec_driver_sql("SELECT to_regclass(%(n)s)::oid::bigint", {"n": name}
                                   ).scalar_one()
        if oid is None:
            raise QueryError(f"--unversioned {name}: no table or view of that name")
        info = _pg_relation(conn, oid)
        if info.temporal or (info.mine and info.name in shadows):
            raise QueryError(f"--unversioned {name}: {info.name} is temporal, so it is read "
                             "as of the export's moment; name only plain tables or views")
        allowed[oid] = name
    return allowed


@dataclass
class _Relation:
    oid: int
    schema: str
    name: str
    kind: str
    mine: bool  # in this session's temporary schema
    temporal: bool

    @property
    def shown(self) -> str:
        return f"{self.schema}.{self.name}"


def _pg_relation(conn: Connection, oid: int) -> _Relation:
    row = conn.exec_driver_sql(
        "SELECT n.nspname, c.relname, c.relkind, c.relnamespace = pg_my_temp_schema(), "
        # Only a table keeps history; a view showing the period columns is a view.
        "c.relkind IN ('r', 'p') AND (SELECT count(*) FROM pg_attribute a "
        " WHERE a.attrelid = c.oid AND NOT a.attisdropped "
        " AND a.attname IN ('created_at', 'expired_at')) = 2 "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %(oid)s",
        {"oid": oid}).one()
    return _Relation(oid, row[0], row[1], row[2], bool(row[3]), bool(row[4]))


def _pg_check_view(conn: Connection, view: str, tree: _Tree, shadows: dict[str, Table],
                   allowed: dict[int, str], depth: int = 0) -> None:
    """Every relation, function and operator the server resolved for ``view``."""
    deps = conn.exec_driver_sql(
        "SELECT DISTINCT d.refclassid::regclass::text, d.refobjid::bigint "
        "FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass "
        "AND d.objid = r.oid WHERE r.ev_class = %(view)s::regclass "
        "AND d.refobjid <> r.ev_class", {"view": view}).all()
    relations: set[int] = set()
    for kind, oid in deps:
        if kind == "pg_class":
            relations.add(oid)
        elif kind == "pg_proc":
            name, volatility = conn.exec_driver_sql(
                "SELECT oid::regproc::text, provolatile FROM pg_proc WHERE oid = %(o)s",
                {"o": oid}).one()
            _pg_check_function(name, oid, volatility)
        elif kind == "pg_operator":
            name, code, volatility = conn.exec_driver_sql(
                "SELECT o.oid::regoper::text, p.oid::bigint, p.provolatile FROM pg_operator o "
                "JOIN pg_proc p ON p.oid = o.oprcode WHERE o.oid = %(o)s", {"o": oid}).one()
            if oid >= _FIRST_NORMAL_OID:
                raise QueryError(f"operator {name} is not built into PostgreSQL; a query may "
                                 "use only built-in operators")
            _pg_check_function(f"{name} (operator)", code, volatility)
    # Built-in catalogs are "pinned" and never appear in pg_depend: resolve each name.
    for schema, name in tree.relations:
        if schema is None and name in tree.ctes:
            continue
        qualified = (f'"{schema}".' if schema else "") + '"' + name.replace('"', '""') + '"'
        oid = conn.exec_driver_sql("SELECT to_regclass(%(n)s)::oid::bigint", {"n": qualified}
                                   ).scalar_one()
        if oid is not None:
            relations.add(oid)
    for oid in sorted(relations):
        _pg_check_relation(conn, _pg_relation(conn, oid), shadows, allowed, depth)


def _pg_check_relation(conn: Connection, rel: _Relation, shadows: dict[str, Table],
                       allowed: dict[int, str], depth: int) -> None:
    if rel.mine and rel.name in shadows:
        return
    if rel.oid in allowed:
        if rel.kind == "v":
            if depth >= 8:
                raise QueryError(f"view {rel.shown} nests views more than 8 deep; query "
                                 "the tables it reads")
            # Read as it is now, by the user's choice; but it may not call what the
            # query itself may not, nor read a temporal table as it is now.
            definition = conn.exec_driver_sql("SELECT pg_get_viewdef(%(o)s)", {"o": rel.oid}
                                              ).scalar_one()
            inner = _pg_tree(definition, what=f"view {rel.shown}", per_run=False)
            _pg_check_functions(conn, inner.functions)
            reads = _pg_view_relations(conn, rel.oid)
            for oid in reads:
                read = _pg_relation(conn, oid)
                if read.temporal:
                    raise QueryError(
                        f"view {rel.shown} reads the temporal table {read.name} as it is "
                        "now, not as of the export's moment (naming the view unversioned "
                        f"does not make {read.name} unversioned): query {read.name} itself")
            everything = {**allowed, **{o: "" for o in reads}}
            _pg_check_view(conn, str(rel.oid), _Tree(functions=inner.functions), shadows,
                           everything, depth + 1)
        return
    default = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
    # The spelling that names it from here: with its schema unless the search path finds it.
    spelled = conn.exec_driver_sql(
        "SELECT CASE WHEN to_regclass(quote_ident(c.relname)) = c.oid THEN "
        "quote_ident(c.relname) ELSE quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
        "END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = %(o)s", {"o": rel.oid}).scalar_one()
    hint = f"; pass --unversioned {spelled} to read it as it is now (the manifest records " \
           "it, and a later export may differ)"
    if rel.temporal and rel.schema == default and rel.name in shadows:
        raise QueryError(f"{rel.shown} is spelled with its schema, which reads its current rows, "
                         f"not those as of the export's moment: write {rel.name} without the "
                         "schema")
    if rel.name.endswith(ARCHIVE_SUFFIX) and rel.name[:-len(ARCHIVE_SUFFIX)] in shadows:
        base = rel.name[:-len(ARCHIVE_SUFFIX)]
        raise QueryError(f"{rel.shown} is the archive of {base}, which changes as archival "
                         f"runs: read {base}, which includes its archived versions as of the "
                         "export's moment")
    if rel.temporal:
        raise QueryError(f"{rel.shown} is a temporal table outside the default schema "
                         f"({default}); only the default schema's tables are seen as of the "
                         "export's moment")
    if rel.mine:
        raise QueryError(f"{rel.name} is a temporary table of this session; it has no past")
    if rel.kind in ("v", "m"):
        raise QueryError(f"{rel.shown} is a view: it reads its tables as they are now, not as "
                         "of the export's moment; query the tables it reads" + hint)
    raise QueryError(f"{rel.shown} is not temporal: its past was never recorded" + hint)


def _pg_view_relations(conn: Connection, oid: int) -> list[int]:
    return [row[0] for row in conn.exec_driver_sql(
        "SELECT DISTINCT d.refobjid::bigint FROM pg_depend d JOIN pg_rewrite r "
        "ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid "
        "WHERE r.ev_class = %(o)s AND d.refclassid = 'pg_class'::regclass "
        "AND d.refobjid <> r.ev_class", {"o": oid})]


def run_error(error: BaseException, guard: Any) -> QueryError:
    """The error for a query that failed while its rows were read."""
    if guard is not None and guard.refusal:  # SQLite: the authorizer said why
        return QueryError(guard.refusal)
    return QueryError(f"the query failed: {first_line(error)}")

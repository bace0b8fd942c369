"""Attacks on --query by an outside reviewer: the rewrite of default-schema names, values
that change from run to run, answers taken in storage order, names in another case.
Each test states what must hold for an export to be reproducible and safe."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from temporal import ExportError, export, verify
from tests.test_sandbox import fingerprint, make_world, rows_of

AS_OF = [["1", "gold"], ["2", "basic"]]  # customers (id, tier) as of the moment


def _database(name: str) -> Iterator[str]:
    from tests.conftest import _PROBLEM, ON_CI, PG_URL

    if _PROBLEM is not None:
        if ON_CI:
            pytest.fail(f"CI requires PostgreSQL: {_PROBLEM}")
        pytest.skip(_PROBLEM)
    admin = create_engine(PG_URL.set(drivername="postgresql+psycopg"),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield str(PG_URL.set(drivername="postgresql+psycopg", database=name)
                  .render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module")
def pg() -> Iterator[tuple[Engine, datetime]]:
    for url in _database(f"temporal_probe_lead_{os.getpid()}"):
        engine = create_engine(url)
        try:
            yield engine, make_world(engine)
        finally:
            engine.dispose()


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[tuple[Engine, datetime]]:
    engine = create_engine(f"sqlite:///{tmp_path}/probe.db")
    yield engine, make_world(engine)
    engine.dispose()


def _out(tmp_path: Path) -> Path:
    return tmp_path / f"o-{uuid.uuid4().hex[:8]}"


def _refused(engine: Engine, moment: datetime, tmp_path: Path, query: str,
             match: str) -> None:
    before = fingerprint(engine)
    with pytest.raises(ExportError, match=match):
        export(engine, _out(tmp_path), as_of=moment, query=query)
    assert fingerprint(engine) == before


def _exported(engine: Engine, moment: datetime, tmp_path: Path, query: str
              ) -> list[list[str]] | None:
    """The rows, or None when the query is refused."""
    out = _out(tmp_path)
    try:
        export(engine, out, as_of=moment, query=query)
    except ExportError:
        return None
    return sorted(rows_of(out))


# -- 1. PostgreSQL evaluates date/time special inputs ('now', 'today', ...) itself --------


@pytest.mark.postgres
@pytest.mark.parametrize("query", [
    "SELECT timestamptz 'now' AS x",
    "SELECT 'now'::timestamptz AS x",
    "SELECT CAST('now' AS timestamp) AS x",
    "SELECT 'now'::time AS x",
    "SELECT date 'today' AS x",
    "SELECT 'tomorrow'::date AS x",
    "SELECT CAST('yesterday' AS date) AS x",
    "SELECT 'today'::timestamptz AS x",
    "SELECT ' NOW '::timestamptz AS x",
    "SELECT '{now}'::date[] AS x",
    "SELECT 'now'::text::timestamptz AS x",
    # implicit coercion of an untyped literal: the everyday spelling
    "SELECT id, tier FROM customers WHERE timestamptz '2000-01-01' < 'now'",
    "SELECT date_trunc('day', 'now'::timestamptz) AS x",
])
def test_pg_special_time_inputs_are_refused_as_per_run(
    pg: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    """'now', 'today', 'tomorrow', 'yesterday' are read from the clock when the text is
    parsed (CREATE TEMP VIEW): the export can never be reproduced, like now()."""
    engine, moment = pg
    _refused(engine, moment, tmp_path, query, "run to run")


@pytest.mark.postgres
def test_pg_now_literal_export_does_not_verify(
    pg: tuple[Engine, datetime], tmp_path: Path
) -> None:
    """The consequence of the above: an export that is accepted and then fails verify."""
    engine, moment = pg
    out = _out(tmp_path)
    try:
        export(engine, out, as_of=moment, query="SELECT timestamptz 'now' AS x")
    except ExportError:
        return  # refused: fine
    assert verify(out / "manifest.json", engine).ok


@pytest.mark.postgres
@pytest.mark.parametrize("query", [
    "SELECT 'customers'::regclass::oid AS x",
    "SELECT to_regclass('customers')::oid AS x",
    "SELECT pg_typeof(c)::oid AS x FROM customers c WHERE id = 1",
])
def test_pg_oids_of_the_as_of_views_are_per_run(
    pg: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    """The as-of views are new temporary objects each export: their oids differ every run,
    so an accepted export must verify (or the query be refused)."""
    engine, moment = pg
    out = _out(tmp_path)
    try:
        export(engine, out, as_of=moment, query=query)
    except ExportError:
        return
    assert verify(out / "manifest.json", engine).ok


# -- 2. literals are read under the client's settings, not the pinned ones ---------------


@pytest.mark.postgres
@pytest.mark.parametrize("query, expected", [
    ("SELECT timestamptz '2026-03-01 00:00' AS x", [["2026-03-01T00:00:00.000000Z"]]),
    ("SELECT '2026-03-01 00:00'::timestamptz AS x", [["2026-03-01T00:00:00.000000Z"]]),
    ("SELECT count(*) AS n FROM customers WHERE '2026-03-01'::timestamptz "
     "= timestamptz '2026-03-01 00:00+00'", [["2"]]),
])
def test_pg_literal_moments_do_not_depend_on_the_client_time_zone(
    pg: tuple[Engine, datetime], tmp_path: Path, query: str, expected: list[list[str]]
) -> None:
    """The README's own advice (``timestamptz '2026-03-01'``) is parsed when the temporary
    view is created, before TimeZone=UTC is pinned: a client with PGTZ (or a role/database
    time zone) exports other rows from the same query and as-of, so verify fails."""
    engine, moment = pg
    elsewhere = create_engine(engine.url, connect_args={
        "options": "-c TimeZone=America/New_York -c DateStyle=ISO,DMY"})
    try:
        here = _exported(engine, moment, tmp_path, query)
        there = _exported(elsewhere, moment, tmp_path, query)
    finally:
        elsewhere.dispose()
    assert here == expected
    assert there == expected


# -- 3. the schema rewrite changes what a name means ----------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("query", [
    # a CTE named like the table: public.customers means the table, never the CTE
    "WITH customers AS (SELECT 99 AS id, 'cte' AS tier), "
    "x AS (SELECT id, tier FROM public.customers) SELECT id, tier FROM x",
    # a column qualified with the schema reaches past an inner alias named like the table
    "SELECT public.customers.id, public.customers.tier FROM public.customers "
    "WHERE public.customers.id = (SELECT public.customers.id FROM orders customers "
    "WHERE customers.id = 1)",
])
def test_pg_rewrite_keeps_the_meaning_or_refuses(
    pg: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    engine, moment = pg
    rows = _exported(engine, moment, tmp_path, query)
    assert rows is None or rows == AS_OF


def test_sqlite_rewrite_keeps_the_meaning_or_refuses(
    lite: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = lite
    rows = _exported(engine, moment, tmp_path,
                     "WITH customers AS (SELECT 99 AS id, 'cte' AS tier), "
                     "x AS (SELECT id, tier FROM main.customers) SELECT id, tier FROM x")
    assert rows is None or rows == AS_OF


# -- 4. SQLite: 'now' reaches a date function by other spellings -----------------------------


@pytest.mark.parametrize("query", [
    "SELECT date('now' || '') AS x",
    "SELECT date('n' || 'ow') AS x",
    'SELECT date("now") AS x',  # a double-quoted string (no column of that name)
    "SELECT date((SELECT 'now')) AS x",
    "WITH t(x) AS (SELECT 'now') SELECT date(x) AS d FROM t",
    "SELECT date(x) AS d FROM (SELECT 'now' AS x)",
    "SELECT date(char(110, 111, 119)) AS x",
    'SELECT date(2460000.5, "localtime") AS x',
    "SELECT date(2460000.5, 'local' || 'time') AS x",
])
def test_sqlite_now_by_other_spellings_is_refused(
    lite: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    engine, moment = lite
    _refused(engine, moment, tmp_path, query, "run to run")


# -- 5. false positives: the words outside a date function ---------------------------------


@pytest.mark.parametrize("query, expected", [
    ("SELECT coalesce(NULL, 'now') AS x", [["now"]]),
    ("SELECT ifnull(NULL, 'UTC') AS x", [["UTC"]]),
    ("SELECT replace('utc+1', 'utc', 'GMT') AS x", [["GMT+1"]]),
    ("SELECT instr(name, 'now') AS x FROM customers", [["0"], ["0"]]),
    ("SELECT upper('utc') AS x", [["UTC"]]),
    ("SELECT printf('%s', 'now') AS x", [["now"]]),
])
def test_sqlite_the_words_outside_date_functions_are_data(
    lite: tuple[Engine, datetime], tmp_path: Path, query: str, expected: list[list[str]]
) -> None:
    """'now', 'utc', 'localtime' given to a text function are text, not the clock."""
    engine, moment = lite
    assert _exported(engine, moment, tmp_path, query) == expected


def test_sqlite_a_table_name_in_another_case_reads_the_moment(
    lite: tuple[Engine, datetime], tmp_path: Path
) -> None:
    """SQLite names are case-insensitive: CUSTOMERS is the as-of view, not 'a view that
    reads its tables as they are now' (the hint then offers an --unversioned that fails)."""
    engine, moment = lite
    assert _exported(engine, moment, tmp_path, "SELECT id, tier FROM CUSTOMERS") == AS_OF
    assert _exported(engine, moment, tmp_path, "SELECT id, tier FROM MAIN.CUSTOMERS") == AS_OF


@pytest.mark.postgres
@pytest.mark.parametrize("query, expected", [
    ("SELECT 'back by tomorrow' AS x", [["back by tomorrow"]]),
    ("SELECT 'snow' AS x", [["snow"]]),
    ("SELECT count(*) AS n FROM customers WHERE name <> 'Ada is here now'", [["2"]]),
    ("SELECT timestamptz 'epoch' AS x", [["1970-01-01T00:00:00.000000Z"]]),
])
def test_pg_the_words_in_a_text_are_data(
    pg: tuple[Engine, datetime], tmp_path: Path, query: str, expected: list[list[str]]
) -> None:
    """A text holding 'now' or 'tomorrow' as a word, not a moment, is not the clock."""
    engine, moment = pg
    assert _exported(engine, moment, tmp_path, query) == expected


@pytest.mark.postgres
@pytest.mark.parametrize("query", [
    "SELECT customers.id, customers.tier FROM public.customers AS customers",
    "SELECT c.id, c.tier FROM public.customers c JOIN (SELECT 1 AS one) s ON s.one = 1",
])
def test_pg_an_alias_of_the_rewritten_table_itself_is_fine(
    pg: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    engine, moment = pg
    assert _exported(engine, moment, tmp_path, query) == AS_OF


@pytest.mark.postgres
def test_pg_shadowing_after_the_rewrite_is_refused_with_a_reason(
    pg: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = pg
    _refused(engine, moment, tmp_path,
             "WITH customers AS (SELECT 99 AS id), x AS (SELECT id FROM public.customers) "
             "SELECT id FROM x", "beside a CTE or an alias named customers")


@pytest.mark.parametrize("query", [
    "SELECT customers.id, customers.tier FROM main.customers AS customers",
    "SELECT c.id, c.tier FROM main.customers c",
])
def test_sqlite_an_alias_of_the_rewritten_table_itself_is_fine(
    lite: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    engine, moment = lite
    assert _exported(engine, moment, tmp_path, query) == AS_OF


def test_sqlite_shadowing_after_the_rewrite_is_refused_with_a_reason(
    lite: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = lite
    _refused(engine, moment, tmp_path,
             "WITH customers AS (SELECT 99 AS id), x AS (SELECT id FROM main.customers) "
             "SELECT id FROM x", "beside a CTE or an alias named customers")
    _refused(engine, moment, tmp_path,
             "SELECT main.customers.id FROM main.customers "
             "WHERE main.customers.id = (SELECT main.customers.id FROM orders customers)",
             "beside a CTE or an alias named customers")


# -- 6. storage order: aggregates and LIMIT without ORDER BY --------------------------------


def _later_change(engine: Engine) -> None:
    """A change after the moment: the as-of version of customer 1 is rewritten (expired)."""
    from sqlalchemy.orm import Session

    from tests.models import Customer

    with Session(engine) as s, s.begin():
        customer = s.get(Customer, 1)
        assert customer is not None
        customer.score = (customer.score or 0) + 1


@pytest.mark.postgres
@pytest.mark.parametrize("query", [
    "SELECT string_agg(name, ',') AS names FROM customers",
    "SELECT array_agg(id) AS ids FROM customers",
    "SELECT json_agg(c) AS j FROM customers c",
    "SELECT name FROM customers LIMIT 1",
    "SELECT id FROM customers OFFSET 1",
    "SELECT DISTINCT ON (status) name FROM customers",
    "SELECT name, row_number() OVER () AS n FROM customers",
    "SELECT name, first_value(name) OVER (PARTITION BY status) AS f FROM customers",
    "SELECT (SELECT string_agg(tier, ',') FROM customers) AS x",
])
def test_pg_storage_order_is_refused(
    pg: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    engine, moment = pg
    _refused(engine, moment, tmp_path, query, "order they are stored")


@pytest.mark.postgres
@pytest.mark.parametrize("query", [
    "SELECT string_agg(name, ',' ORDER BY name) AS names FROM customers",
    "SELECT string_agg(DISTINCT name, ',') AS names FROM customers",
    "SELECT name FROM customers ORDER BY id LIMIT 1",
    "SELECT DISTINCT status FROM customers",
    "SELECT name, row_number() OVER (ORDER BY id) AS n FROM customers",
    "SELECT name, count(*) OVER (PARTITION BY status) AS n FROM customers",
])
def test_pg_ordered_aggregates_export_and_verify_after_later_history(
    pg: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    """With an ORDER BY the answer is the data's; a change after the moment moves rows on
    disk and the export still verifies."""
    engine, moment = pg
    out = _out(tmp_path)
    export(engine, out, as_of=moment, query=query)
    _later_change(engine)
    assert verify(out / "manifest.json", engine).ok


@pytest.mark.parametrize("query", [
    "SELECT group_concat(name) AS names FROM customers",
    "SELECT group_concat(DISTINCT name) AS names FROM customers",
    "SELECT json_group_array(name) AS names FROM customers",
    "SELECT name FROM customers LIMIT 1",
    "SELECT (SELECT group_concat(tier) FROM customers) AS x",
])
def test_sqlite_storage_order_is_refused(
    lite: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    engine, moment = lite
    _refused(engine, moment, tmp_path, query, "order they are stored")


@pytest.mark.parametrize("query", [
    "SELECT group_concat(name) AS names FROM (SELECT name FROM customers ORDER BY name)",
    "SELECT name FROM customers ORDER BY id LIMIT 1",
    "SELECT count(id) AS n FROM customers",
])
def test_sqlite_ordered_answers_export(
    lite: tuple[Engine, datetime], tmp_path: Path, query: str
) -> None:
    engine, moment = lite
    out = _out(tmp_path)
    export(engine, out, as_of=moment, query=query)
    _later_change(engine)
    assert verify(out / "manifest.json", engine).ok


def test_sqlite_count_star_of_an_archived_table(
    lite: tuple[Engine, datetime], tmp_path: Path
) -> None:
    """A bare count(*) of a table with an archive: the as-of view is not a bare
    UNION ALL, so SQLite's count-of-view optimisation never reads the view with no
    schema named (which the authorizer refused as 'None.customers is spelled with
    its schema'); the count is the export moment's, archived versions included."""
    engine, moment = lite
    assert _exported(engine, moment, tmp_path, "SELECT count(*) AS n FROM customers") == [["2"]]

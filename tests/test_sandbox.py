"""The --query sandbox against real databases, as the superuser the tests connect with.

Every attack below must be refused with a clear error, and afterwards the
database, the server's files and other sessions must be exactly as before.
Every spelling of a temporal table either reads it as of the moment or is
refused.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from temporal import ExportError, export, transaction_time, verify
from temporal.archival import archive_table
from tests.models import Base, Customer, Order

LATE = "platinum"  # written after the moment: no as-of read may see it


def make_world(engine: Engine) -> datetime:
    """Customers and orders with history, a plain table, a view, an archive; a moment."""
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Customer(id=1, name="Ada"), Customer(id=2, name="Bob")])
        s.add_all([Order(id=1, customer_id=1, amount=5)])
    with Session(engine) as s, s.begin():
        s.get(Customer, 1).tier = "gold"
        moment = transaction_time(s)
    with Session(engine) as s, s.begin():
        s.get(Customer, 1).tier = LATE
        s.get(Customer, 2).tier = LATE
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO regions (id, name) VALUES (1, 'north')")
        conn.exec_driver_sql("CREATE VIEW v_customers AS SELECT id, name, tier FROM customers")
        archive_table(conn, Customer.__table__)  # type: ignore[arg-type]
    return moment


@pytest.fixture
def world(engine: Engine) -> tuple[Engine, datetime]:
    return engine, make_world(engine)


def fingerprint(engine: Engine) -> dict[str, object]:
    """Every table's and view's rows, and the list of objects: the whole visible database."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        names = sorted(inspector.get_table_names()) + sorted(inspector.get_view_names())
        state: dict[str, object] = {"objects": names}
        for name in names:
            rows = conn.exec_driver_sql(f'SELECT * FROM "{name}"').all()
            state[name] = sorted(repr(tuple(r)) for r in rows)
        if engine.dialect.name == "postgresql":
            state["functions"] = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_proc WHERE oid >= 16384").scalar_one()
            state["large objects"] = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_largeobject_metadata").scalar_one()
    return state


def rows_of(out: Path, name: str = "query") -> list[list[str]]:
    lines = (out / name / "part-00000.csv").read_text().splitlines()[1:]
    return [[v.strip('"') for v in line.split(",")] for line in lines]


def refused(engine: Engine, moment: datetime, tmp_path: Path, query: str, match: str,
            **kw: object) -> None:
    before = fingerprint(engine)
    out = tmp_path / f"out-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ExportError, match=match):
        export(engine, out, as_of=moment, query=query, **kw)  # type: ignore[arg-type]
    assert not out.exists() and not Path(str(out) + ".partial").exists()
    assert fingerprint(engine) == before


# -- escapes on both backends ----------------------------------------------------------


@pytest.mark.parametrize("query, match", [
    ("SELECT 1) AS q; COMMIT; DELETE FROM customers; SELECT * FROM (SELECT 1",
     "not valid SQL|exactly one SELECT"),
    ("SELECT 1; DELETE FROM customers", "exactly one SELECT"),
    ("SELECT 1; DROP TABLE customers", "exactly one SELECT"),
    ("DELETE FROM customers", "must be a SELECT"),
    ("UPDATE customers SET name = 'x'", "must be a SELECT"),
    ("INSERT INTO regions (id, name) VALUES (2, 'x')", "must be a SELECT"),
    ("DROP TABLE customers", "must be a SELECT"),
    ("ROLLBACK", "must be a SELECT"),
    ("SELECT * FROM regions", "regions is not temporal.*--unversioned regions"),
    ("SELECT id FROM customers_archive", "archive of customers"),
    ("SELECT * FROM v_customers", "v_customers is a view"),
    ("SELECT random()", "function random"),
])
def test_an_escape_is_refused_and_changes_nothing(
    world: tuple[Engine, datetime], tmp_path: Path, query: str, match: str
) -> None:
    engine, moment = world
    refused(engine, moment, tmp_path, query, match)


@pytest.mark.parametrize("spelling", [
    "SELECT id, tier FROM customers",
    'SELECT id, tier FROM "customers"',
    "SELECT id, tier FROM customers c WHERE EXISTS (SELECT 1 FROM customers d WHERE d.id = c.id)",
    "WITH x AS (SELECT id, tier FROM customers) SELECT id, tier FROM x",
    "SELECT id, tier FROM (SELECT * FROM customers) AS s",
    "SELECT id, (SELECT tier FROM customers d WHERE d.id = c.id) FROM customers c",
])
def test_unqualified_spellings_read_the_moment(
    world: tuple[Engine, datetime], tmp_path: Path, spelling: str
) -> None:
    engine, moment = world
    export(engine, tmp_path / "o", as_of=moment, query=spelling)
    assert sorted(rows_of(tmp_path / "o")) == [["1", "gold"], ["2", "basic"]]


def test_verify_names_the_unversioned_tables_when_the_re_export_differs(
    world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    """An unversioned table is read as it is now: when it moves on, verify says so
    rather than blaming history alone."""
    engine, moment = world
    export(engine, tmp_path / "u", as_of=moment, unversioned=["regions"],
           query="SELECT c.id, r.name FROM customers c, regions r")
    assert verify(tmp_path / "u" / "manifest.json", engine).ok
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE regions SET name = 'south'")
    report = verify(tmp_path / "u" / "manifest.json", engine)
    assert not report.ok
    assert any("what it reads unversioned changed (regions)" in p for p in report.problems)


def test_a_plain_table_or_view_is_read_only_when_named_unversioned(
    world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = world
    manifest = export(engine, tmp_path / "u", as_of=moment, unversioned=["regions"],
                      query="SELECT c.id, r.name FROM customers c, regions r")
    assert manifest.unversioned == ["regions"]
    written = json.loads((tmp_path / "u" / "manifest.json").read_text())
    assert written["unversioned"] == ["regions"]
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE VIEW v_regions AS SELECT id, name FROM regions")
    view = export(engine, tmp_path / "v", as_of=moment, unversioned=["v_regions"],
                  query="SELECT id, name FROM v_regions")
    assert rows_of(tmp_path / "v") == [["1", "north"]] and view.unversioned == ["v_regions"]
    # A view over a temporal table would read it as it is now: naming the view
    # unversioned does not make its temporal tables unversioned.
    refused(engine, moment, tmp_path, "SELECT id, tier FROM v_customers",
            "v_customers reads the temporal table customers", unversioned=["v_customers"])
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE VIEW v_mixed AS SELECT r.name, c.tier FROM regions r "
                             "JOIN customers c ON c.id = r.id")
        conn.exec_driver_sql("CREATE VIEW v_periods AS SELECT * FROM customers")
    refused(engine, moment, tmp_path, "SELECT * FROM v_mixed",
            "v_mixed reads the temporal table customers", unversioned=["v_mixed"])
    # A view showing the period columns is still a view, not a temporal table.
    refused(engine, moment, tmp_path, "SELECT * FROM v_periods", "v_periods is a view")
    refused(engine, moment, tmp_path, "SELECT * FROM v_periods",
            "v_periods reads the temporal table customers", unversioned=["v_periods"])
    refused(engine, moment, tmp_path, "SELECT * FROM customers", "customers is temporal",
            unversioned=["customers"])
    refused(engine, moment, tmp_path, "SELECT 1", "no table or view", unversioned=["nope"])


# -- PostgreSQL --------------------------------------------------------------------


@pytest.fixture
def pg_world(pg_engine: Engine) -> tuple[Engine, datetime]:
    return pg_engine, make_world(pg_engine)


@pytest.fixture(scope="module")
def shared_pg_world() -> Iterator[tuple[Engine, datetime]]:
    """One database for the many refusals below: each test checks it is left unchanged."""
    from sqlalchemy import create_engine

    from tests.conftest import _PROBLEM, ON_CI, PG_URL

    if _PROBLEM is not None:
        if ON_CI:
            pytest.fail(f"CI requires PostgreSQL: {_PROBLEM}")
        pytest.skip(_PROBLEM)
    name = f"temporal_sandbox_{os.getpid()}"
    admin = create_engine(PG_URL.set(drivername="postgresql+psycopg"),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = create_engine(PG_URL.set(drivername="postgresql+psycopg", database=name))
    try:
        yield engine, make_world(engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("spelling", [
    "SELECT id, tier FROM public.customers",
    'SELECT id, tier FROM "public"."customers"',
    "SELECT id, tier FROM {db}.public.customers",
    "SELECT public.customers.id, public.customers.tier FROM public.customers",
    "SELECT {db}.public.customers.id, tier FROM public.customers",
    "SELECT c.id, c.tier FROM public.customers c "
    "WHERE EXISTS (SELECT 1 FROM public.customers d WHERE d.id = c.id)",
    "SELECT id, tier FROM customers WHERE tier <> 'public.customers'",
])
def test_schema_qualified_spellings_read_the_moment_on_postgres(
    shared_pg_world: tuple[Engine, datetime], tmp_path: Path, spelling: str
) -> None:
    """``public.customers`` names the table itself; the query is rewritten to read the
    as-of view instead, so every spelling sees the export's moment."""
    engine, moment = shared_pg_world
    before = fingerprint(engine)
    export(engine, tmp_path / "o", as_of=moment,
           query=spelling.format(db=f'"{engine.url.database}"'))
    assert sorted(rows_of(tmp_path / "o")) == [["1", "gold"], ["2", "basic"]]
    assert fingerprint(engine) == before


@pytest.mark.postgres
def test_the_unversioned_hint_names_what_resolves(
    shared_pg_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    """The hint's spelling works when passed back: a catalog outside the search path."""
    engine, moment = shared_pg_world
    manifest = export(engine, tmp_path / "i", as_of=moment,
                      unversioned=["information_schema.tables"],
                      query="SELECT count(*) > 0 FROM information_schema.tables")
    assert manifest.unversioned == ["information_schema.tables"]


@pytest.mark.postgres
def test_a_rewritten_query_is_checked_like_any_other(
    shared_pg_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = shared_pg_world
    refused(engine, moment, tmp_path, "SELECT c.id FROM public.customers c, regions r",
            "regions is not temporal")
    refused(engine, moment, tmp_path,
            "SELECT id FROM public.customers WHERE pg_terminate_backend(1)", "VOLATILE")


@pytest.fixture
def bystander(shared_pg_world: tuple[Engine, datetime]
              ) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Another session on the same database, which no query may disturb."""
    url = shared_pg_world[0].url
    conn = psycopg.connect(host=url.host, port=url.port or 5432, user=url.username,
                           password=url.password, dbname=url.database, autocommit=True)
    conn.execute("SET application_name = 'bystander'")
    yield conn
    conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("query, match", [
    ("SELECT 1) AS q; COMMIT; DELETE FROM customers; SELECT * FROM (SELECT 1",
     "not valid SQL|exactly one"),
    ("SELECT 1; ROLLBACK; BEGIN READ WRITE; CREATE TABLE evil (x int)", "exactly one"),
    ("COPY (SELECT 1) TO PROGRAM 'touch {file}'", "must be a SELECT, not COPY"),
    ("SELECT 1) AS q; COPY (SELECT 1) TO '{file}'; SELECT * FROM (SELECT 1", "not valid|one"),
    ("SELECT lo_export(lo_from_bytea(0, 'x'), '{file}')", "VOLATILE"),
    ("SELECT pg_terminate_backend({pid})", "pg_terminate_backend is VOLATILE"),
    ("SELECT pg_cancel_backend({pid})", "VOLATILE"),
    ("SELECT pg_advisory_lock(42)", "VOLATILE"),
    ("SELECT pg_stat_reset()", "VOLATILE"),
    ("SELECT pg_notify('c', 'x')", "VOLATILE"),
    ("SELECT set_config('search_path', 'x', false)", "VOLATILE"),
    ("SELECT nextval('customers_id_seq')", "VOLATILE"),
    ("SELECT pg_read_file('/etc/hostname')", "VOLATILE"),
    ("SELECT pg_sleep(0)", "VOLATILE"),
    ("SELECT query_to_xml('DELETE FROM customers', true, false, '')", "reads tables by name"),
    ("SELECT table_to_xml('public.customers', true, false, '')", "reads tables by name"),
    ("WITH d AS (DELETE FROM customers RETURNING id) SELECT id FROM d", "data-modifying DELETE"),
    ("WITH d AS (UPDATE customers SET tier = 'x' RETURNING id) SELECT id FROM d",
     "data-modifying UPDATE"),
    ("SELECT * FROM customers FOR UPDATE", "locking clause"),
    ("SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders FOR SHARE)",
     "locking clause"),
    ("SELECT * INTO evil FROM customers", "SELECT INTO"),
    ("SELECT $1", r"parameters \(\$1"),
    ("EXPLAIN ANALYZE DELETE FROM customers", "must be a SELECT, not EXPLAIN"),
    ("DO $$ BEGIN DELETE FROM customers; END $$", "must be a SELECT, not DO"),
    ("SELECT relname FROM pg_class", "pg_class is not temporal.*--unversioned pg_class "),
    ("SELECT table_name FROM information_schema.tables",
     "information_schema.tables is a view.*--unversioned information_schema.tables "),
    ("SELECT * FROM public.customers_archive", "archive of customers"),
])
def test_postgres_escapes_are_refused_and_change_nothing(
    shared_pg_world: tuple[Engine, datetime],
    bystander: psycopg.Connection[tuple[object, ...]], tmp_path: Path, query: str, match: str
) -> None:
    engine, moment = shared_pg_world
    file = tmp_path / "server-file"  # the server runs on this machine
    pid = bystander.info.backend_pid
    refused(engine, moment, tmp_path, query.format(file=file, pid=pid), match)
    assert not file.exists()
    assert bystander.execute("SELECT 1").fetchone() == (1,)  # not killed, not cancelled
    # No lock left behind (asked from another session, which a held lock would block).
    assert bystander.execute("SELECT pg_try_advisory_lock(42) AND pg_advisory_unlock(42)"
                             ).fetchone() == (True,)
    with engine.connect() as conn:  # no setting changed
        assert conn.execute(text("SELECT current_setting('search_path')")).scalar_one() \
            != "x"


@pytest.mark.postgres
def test_two_output_columns_with_one_name_are_refused_clearly(
    pg_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = pg_world
    refused(engine, moment, tmp_path, "SELECT c.id, o.id FROM customers c, orders o",
            "names a column twice.*AS")


@pytest.mark.postgres
def test_user_made_functions_and_operators_are_refused(
    pg_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = pg_world
    with engine.begin() as conn:
        # IMMUTABLE on paper, yet it could do anything: only built-ins are trusted.
        conn.exec_driver_sql("CREATE FUNCTION evil(int) RETURNS int IMMUTABLE LANGUAGE sql "
                             "AS 'SELECT $1'")
        conn.exec_driver_sql("CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, "
                             "FUNCTION = int4pl)")
        conn.exec_driver_sql("CREATE FUNCTION evil_plus(int, int) RETURNS int IMMUTABLE "
                             "LANGUAGE sql AS 'SELECT $1 + $2'")
        conn.exec_driver_sql("CREATE OPERATOR #+# (LEFTARG = int, RIGHTARG = int, "
                             "FUNCTION = evil_plus)")
    refused(engine, moment, tmp_path, "SELECT evil(id) FROM customers", "not built into")
    refused(engine, moment, tmp_path, "SELECT public.evil(1)", "not built into")
    refused(engine, moment, tmp_path, "SELECT id ### 1 FROM customers", "operator .* not built")
    refused(engine, moment, tmp_path, "SELECT id #+# 1 FROM customers", "not built into")


@pytest.mark.postgres
def test_table_and_built_in_functions_read_the_moment_on_postgres(
    pg_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = pg_world
    export(engine, tmp_path / "t", as_of=moment,
           query="SELECT upper(tier), length(name), to_char(date '2026-01-02', 'YYYY') "
                 "FROM (TABLE customers) c")
    assert sorted(r[0] for r in rows_of(tmp_path / "t")) == ["BASIC", "GOLD"]


PER_RUN_PG = [
    ("SELECT id FROM customers WHERE now() > '2000-01-01'", "now()"),
    ("SELECT id, current_timestamp FROM customers", "CURRENT_TIMESTAMP"),
    ("SELECT id, localtimestamp(3) FROM customers", "LOCALTIMESTAMP"),
    ("SELECT id FROM customers WHERE current_date > '2000-01-01'", "CURRENT_DATE"),
    ("SELECT id, current_user FROM customers", "CURRENT_USER"),
    ("SELECT id, pg_catalog.statement_timestamp() FROM customers", "statement_timestamp()"),
    ("SELECT id, pg_backend_pid() FROM customers", "pg_backend_pid()"),
    ("SELECT id, txid_current() FROM customers", "txid_current()"),
    ("SELECT id, current_setting('TimeZone') FROM customers", "current_setting()"),
    ("SELECT id, age(timestamp '2000-01-01') FROM customers", "age"),
    ("SELECT id, pg_stat_get_numscans('customers'::regclass) FROM customers",
     "pg_stat_get_numscans()"),
    ("SELECT id, has_table_privilege('customers', 'SELECT') FROM customers",
     "has_table_privilege()"),
    ("SELECT id, version() FROM customers", "version()"),
    ("SELECT id FROM customers WHERE created_at < 'now'::timestamptz", "'now' as a date"),
    ("SELECT id, timestamptz 'today' FROM customers", "'today' as a date"),
    ("SELECT id, CAST(' Tomorrow ' AS date) FROM customers", "' Tomorrow ' as a date"),
    ("SELECT id FROM customers WHERE created_at < 'now'", "'now' as a date"),
]


@pytest.mark.postgres
@pytest.mark.parametrize(("query", "named"), PER_RUN_PG)
def test_values_that_change_from_run_to_run_are_refused_on_postgres(
    pg_world: tuple[Engine, datetime], tmp_path: Path, query: str, named: str
) -> None:
    """now() and its kin would make an export that could never verify."""
    engine, moment = pg_world
    refused(engine, moment, tmp_path, query, f"{re.escape(named)}.*run to run")


@pytest.mark.postgres
def test_age_of_two_moments_is_data_not_the_clock_on_postgres(
    pg_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = pg_world
    export(engine, tmp_path / "t", as_of=moment, query=(
        "SELECT id, age(timestamp '2001-03-04', timestamp '2000-01-01')::text AS a, "
        "'now'::text AS word, 'epoch'::timestamptz AS e FROM customers "
        "WHERE tier <> 'today'::varchar"))
    assert {r[1] for r in rows_of(tmp_path / "t")} == {"P1Y2M3D"}


@pytest.mark.postgres
def test_a_view_named_unversioned_may_not_call_what_a_query_may_not(
    pg_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = pg_world
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE VIEW killer AS SELECT pg_terminate_backend(0) AS k")
    refused(engine, moment, tmp_path, "SELECT * FROM killer", "pg_terminate_backend is VOLATILE",
            unversioned=["killer"])


@pytest.mark.postgres
def test_a_deep_chain_of_views_named_unversioned_is_checked_to_the_bottom(
    pg_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = pg_world
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE VIEW chain0 AS SELECT pg_terminate_backend(0) AS k")
        for i in range(1, 10):
            conn.exec_driver_sql(f"CREATE VIEW chain{i} AS SELECT * FROM chain{i - 1}")
    refused(engine, moment, tmp_path, "SELECT * FROM chain9", "nests views more than 8 deep",
            unversioned=["chain9"])
    refused(engine, moment, tmp_path, "SELECT * FROM chain3", "pg_terminate_backend is VOLATILE",
            unversioned=["chain3"])


# -- SQLite ------------------------------------------------------------------------


@pytest.fixture
def sqlite_world(sqlite_url: object) -> Iterator[tuple[Engine, datetime]]:
    from sqlalchemy import create_engine

    engine = create_engine(sqlite_url)  # type: ignore[call-overload]
    yield engine, make_world(engine)
    engine.dispose()


@pytest.mark.parametrize("query, match", [
    ("SELECT name FROM sqlite_master", "sqlite_master is not temporal"),
    ("ATTACH DATABASE '{file}' AS other", "must be a SELECT"),
    ("SELECT 1) AS q; ATTACH DATABASE '{file}' AS o; SELECT * FROM (SELECT 1",
     "not valid SQL|exactly one"),
    ("PRAGMA writable_schema = 1", "must be a SELECT"),
    ("SELECT load_extension('{file}')", "function load_extension"),
    ("SELECT randomblob(4)", "function randomblob"),
    ("VACUUM INTO '{file}'", "must be a SELECT|not valid"),
])
def test_sqlite_escapes_are_refused_by_the_authorizer(
    sqlite_world: tuple[Engine, datetime], tmp_path: Path, query: str, match: str
) -> None:
    engine, moment = sqlite_world
    file = tmp_path / "elsewhere.db"
    refused(engine, moment, tmp_path, query.format(file=file), match)
    assert not file.exists()


def test_sqlite_temp_spelling_reads_the_moment(
    sqlite_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = sqlite_world
    export(engine, tmp_path / "t", as_of=moment, query="SELECT id, tier FROM temp.customers")
    assert sorted(rows_of(tmp_path / "t")) == [["1", "gold"], ["2", "basic"]]
    export(engine, tmp_path / "j", as_of=moment,
           query="SELECT c.id, j.value FROM customers c, json_each('[10, 20]') j")
    assert len(rows_of(tmp_path / "j")) == 4
    with engine.connect() as conn:  # the views and the authorizer are gone afterwards
        assert conn.exec_driver_sql("SELECT count(*) FROM customers").scalar_one() == 5
        conn.exec_driver_sql("SELECT random()")
    assert os.path.exists(engine.url.database or "")


@pytest.mark.parametrize(("query", "named"), [
    ("SELECT id, date('now') FROM customers", "'now'"),
    ("SELECT id FROM customers WHERE strftime('%s', 'NOW') > '0'", "'NOW'"),
    ("SELECT id, datetime('2026-01-01', 'localtime') FROM customers", "'localtime'"),
    ("SELECT id, julianday() FROM customers", "julianday()"),
    ("SELECT id, CURRENT_TIMESTAMP FROM customers", "CURRENT_TIMESTAMP"),
    ("SELECT id, current_date FROM customers", "CURRENT_DATE"),
])
def test_values_that_change_from_run_to_run_are_refused_on_sqlite(
    sqlite_world: tuple[Engine, datetime], tmp_path: Path, query: str, named: str
) -> None:
    engine, moment = sqlite_world
    refused(engine, moment, tmp_path, query, f"{re.escape(named)}.*run to run")


@pytest.mark.parametrize("spelling", [
    "SELECT id, tier FROM main.customers",
    'SELECT id, tier FROM "main"."customers"',
    "SELECT main.customers.id, main.customers.tier FROM main.customers",
    "SELECT c.id, c.tier FROM [main].customers c "
    "WHERE EXISTS (SELECT 1 FROM main.customers d WHERE d.id = c.id)",
    "SELECT id, tier FROM customers WHERE tier <> 'main.customers' -- main.customers",
])
def test_schema_qualified_spellings_read_the_moment_on_sqlite(
    sqlite_world: tuple[Engine, datetime], tmp_path: Path, spelling: str
) -> None:
    engine, moment = sqlite_world
    export(engine, tmp_path / "o", as_of=moment, query=spelling)
    assert sorted(rows_of(tmp_path / "o")) == [["1", "gold"], ["2", "basic"]]


def test_date_functions_of_the_data_still_work_on_sqlite(
    sqlite_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    engine, moment = sqlite_world
    export(engine, tmp_path / "t", as_of=moment,
           query="SELECT id, date('2026-01-31', '+1 day') AS d FROM customers "
                 "WHERE name <> 'now'")
    assert {r[1] for r in rows_of(tmp_path / "t")} == {"2026-02-01"}


def test_the_connection_gets_sqlites_own_date_functions_back(
    sqlite_world: tuple[Engine, datetime], tmp_path: Path
) -> None:
    """The checked date functions live only for the read: the pooled connection that
    served it answers date('now') again afterwards (the library's own clock needs it)."""
    engine, moment = sqlite_world
    export(engine, tmp_path / "t", as_of=moment,
           query="SELECT id, date('2026-01-31', '+1 day') AS d FROM customers")
    refused(engine, moment, tmp_path, "SELECT id, date(name || 'now') FROM customers "
            "WHERE 0 UNION SELECT 1, date('n' || 'ow')", "run to run")
    for _ in range(3):  # whichever pooled connection comes back
        before = datetime.now(UTC).date().isoformat()
        with engine.connect() as conn:
            today = conn.exec_driver_sql("SELECT date('now')").scalar_one()
        assert today in {before, datetime.now(UTC).date().isoformat()}

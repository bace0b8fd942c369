"""The catalog: its own Alembic history, registration on CREATE, TTLs, `temporal db`."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from temporal import catalog, guard
from temporal.cli import app
from tests.models import Base, Customer, Region

runner = CliRunner()


def _url(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_create_all_registers_temporal_tables_with_key_and_ttl(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    with engine.connect() as conn:
        found = {r.table: r for r in catalog.registrations(conn)}
        assert catalog.current_revision(conn) == catalog.head_revision()
    assert set(found) == {"customers", "orders", "lines"}  # not the plain `regions`
    assert found["customers"].key == ["id"] and found["customers"].ttl == timedelta(days=30)
    assert found["lines"].key == ["order_no", "line_no"] and found["lines"].ttl is None
    Customer.__table__.drop(engine)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert [r.table for r in catalog.registrations(conn)] == ["lines", "orders"]


def test_catalog_upgrade_downgrade_upgrade(engine: Engine) -> None:
    assert catalog.upgrade(engine) == catalog.head_revision()
    assert {"temporal_tables", "temporal_alembic_version"} <= _tables(engine)
    assert catalog.downgrade(engine, "base") is None
    assert "temporal_tables" not in _tables(engine)
    assert catalog.upgrade(engine) == catalog.head_revision()
    assert catalog.upgrade(engine) == catalog.head_revision()  # idempotent
    # The application's own Alembic history is untouched: its version table is not ours.
    assert "alembic_version" not in _tables(engine)


def _catalog_diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "include_name": lambda n, t, p: t != "table" or n == catalog.CATALOG_TABLE})
        return compare_metadata(context, catalog.metadata)  # type: ignore[no-any-return]


def test_a_catalog_created_on_the_fly_equals_the_migrated_one(engine: Engine) -> None:
    Base.metadata.create_all(engine)  # creates the catalog from its metadata and stamps it
    assert _catalog_diff(engine) == []
    # ... and one built by the Alembic revisions matches the same metadata
    catalog.downgrade(engine, "base")
    catalog.upgrade(engine)
    assert _catalog_diff(engine) == []


def test_upgrade_registers_temporal_tables_made_before_the_catalog(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    catalog.downgrade(engine, "base")  # as if the tables predate the catalog
    state = catalog.status(engine)
    assert state.revision is None
    assert {t.table for t in state.tables if not t.registered} == {"customers", "orders", "lines"}
    catalog.upgrade(engine)
    with engine.connect() as conn:
        assert {r.table for r in catalog.registrations(conn)} == {"customers", "orders", "lines"}


def test_db_status_on_a_populated_database(engine: Engine, url: URL) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Region(id=1, name="north"))
        session.add_all([Customer(id=i, name=f"c{i}") for i in range(1, 4)])
        session.commit()
        for customer in session.query(Customer):
            customer.name += "!"
        session.commit()
    result = runner.invoke(app, ["db", "status", "--url", _url(url)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"catalog: revision {catalog.head_revision()}"
    row = next(line.split() for line in lines if line.startswith(" customers"))
    assert row[:5] == ["customers", "id", "30d", "3", "3"]  # key, TTL, current, history
    assert row[-1] == "yes"  # guarded: raw writers are versioned
    assert not any("regions" in line for line in lines)
    assert url.password is None or url.password not in result.output


def test_ttl_command_shows_changes_and_refuses_bad_input(engine: Engine, url: URL) -> None:
    Base.metadata.create_all(engine)
    address = _url(url)
    result = runner.invoke(app, ["ttl", "customers", "--url", address])
    assert (result.exit_code, result.output) == (0, "customers: ttl 30d\n")
    result = runner.invoke(app, ["ttl", "orders", "1d12h", "--url", address])
    assert (result.exit_code, result.output) == (0, "orders: ttl 1d12h\n")
    result = runner.invoke(app, ["ttl", "customers", "--none", "--url", address])
    assert (result.exit_code, result.output) == (0, "customers: ttl none (history is kept)\n")
    with engine.connect() as conn:
        assert catalog.registration(conn, "orders").ttl == timedelta(days=1, hours=12)
        assert catalog.registration(conn, "customers").ttl is None

    for args, message in [
        (["ttl", "nope", "9d"], "'nope' is not a registered temporal table (registered: "
                                "customers, lines, orders)"),
        (["ttl", "regions", "9d"], "'regions' is not a registered temporal table"),
        (["ttl", "orders", "9x"], "cannot read '9x' as a duration"),
        (["ttl", "orders", "0s"], "a TTL must be positive"),
    ]:
        result = runner.invoke(app, [*args, "--url", address])
        assert result.exit_code == 1
        assert message in str(result.exception) or message in result.output
    with engine.connect() as conn:  # refusals changed nothing
        assert catalog.registration(conn, "orders").ttl == timedelta(days=1, hours=12)


@pytest.mark.parametrize("args", [["db", "status"], ["ttl", "x", "1d"]])
def test_catalog_commands_on_an_unreachable_database_fail_cleanly(args: list[str]) -> None:
    import subprocess
    import sys

    url = "postgresql+psycopg://u:s3cret@127.0.0.1:1/nowhere"
    done = subprocess.run([sys.executable, "-m", "temporal", *args, "--url", url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("temporal: error: cannot connect to")
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


def test_an_old_catalog_asks_for_an_upgrade_and_gets_one(engine: Engine) -> None:
    catalog.upgrade(engine, "0001")
    with pytest.raises(catalog.CatalogError, match="temporal db upgrade"):
        Base.metadata.create_all(engine)  # registration needs the current catalog
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("customers")  # refused: nothing was created
    assert catalog.upgrade(engine) == catalog.head_revision()
    Base.metadata.create_all(engine)
    with engine.connect() as conn:
        assert {r.table for r in catalog.registrations(conn)} == {"customers", "orders", "lines"}


def test_dropping_a_plain_table_leaves_a_plain_table_named_like_its_archive(
        engine: Engine) -> None:
    """Plain `orders` and `orders_archive` beside temporal models: DDL hooks leave them be."""
    plain = sa.MetaData()
    orders = sa.Table("orders", plain, sa.Column("id", sa.Integer, primary_key=True))
    archive = sa.Table("orders_archive", plain, sa.Column("id", sa.Integer, primary_key=True))
    Base.metadata.create_all(engine, tables=[Region.__table__, Customer.__table__])  # + catalog
    plain.create_all(engine)
    with engine.begin() as conn:
        conn.execute(archive.insert().values(id=1))
    orders.drop(engine)
    assert "orders_archive" in _tables(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(archive.c.id)).scalars().all() == [1]
        assert [r.table for r in catalog.registrations(conn)] == ["customers"]
        assert not guard.installed(conn, "orders_archive")
    Customer.__table__.drop(engine)  # a temporal table still takes its own archive along
    assert "customers" not in _tables(engine)

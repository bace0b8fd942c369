"""TTL archival: what moves, what stays, reads across the archive, kills and rivals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import URL, Engine, func, select
from sqlalchemy.orm import Session

from temporal import (
    ArchiverBusyError,
    archive,
    as_of,
    export,
    guard,
    history,
    triggers,
    versions,
)
from temporal.clock import UTC
from tests.models import Base, Customer

DAY = timedelta(days=1)


def _now(engine: Engine) -> datetime:
    from temporal._backend import database_now

    with engine.connect() as conn:
        return database_now(conn)


def _old_history(engine: Engine, keys: range, versions_each: int, ended: datetime) -> None:
    """Versions written long ago: for each key, ``versions_each`` expired versions (one a
    day, the last expiring at ``ended``) and a current one since ``ended``."""
    table = Customer.__table__
    rows = []
    start = ended - versions_each * DAY
    for key in keys:
        for n in range(versions_each + 1):
            began = start + n * DAY
            rows.append({"id": key, "name": f"c{key} v{n}", "tier": "basic",
                         "revision_note": "x", "status": "active", "created_at": began,
                         "expired_at": None if n == versions_each else began + DAY})
    with engine.begin() as conn, triggers.maintenance(conn):  # forged: past the triggers
        for chunk in range(0, len(rows), 5000):
            conn.execute(table.insert(), rows[chunk:chunk + 5000])  # type: ignore[attr-defined]


def _counts(engine: Engine) -> tuple[int, int, int]:
    """(current, history in the hot table, archived)."""
    only = "ONLY " if engine.dialect.name == "postgresql" else ""
    with engine.connect() as conn:
        current, hot = conn.exec_driver_sql(
            "SELECT count(*) FILTER (WHERE expired_at IS NULL), "
            f"count(*) FILTER (WHERE expired_at IS NOT NULL) FROM {only}customers").one()
        archived = 0
        if sa.inspect(conn).has_table("customers_archive"):
            archived = conn.exec_driver_sql("SELECT count(*) FROM customers_archive"
                                            ).scalar_one()
    return current, hot, archived


@pytest.fixture
def populated(engine: Engine) -> Engine:
    """Customers 1-20: four versions expired 60+ days ago; 1-5 also changed just now."""
    Base.metadata.create_all(engine)
    now = _now(engine)
    _old_history(engine, range(1, 21), 4, now - 60 * DAY)
    with Session(engine) as session, session.begin():
        for customer in session.scalars(select(Customer).where(Customer.id <= 5)):
            customer.name += " (recent)"
    return engine


def test_only_versions_past_the_ttl_move(populated: Engine) -> None:
    assert _counts(populated) == (20, 85, 0)
    preview = archive(populated, dry_run=True)
    assert preview.moved == 80 and preview.dry_run
    assert _counts(populated) == (20, 85, 0)  # a dry run touches nothing
    with populated.connect() as conn:
        assert not sa.inspect(conn).has_table("customers_archive")

    summary = archive(populated, batch_size=7)  # customers' TTL (30 days) from the catalog
    moved = {t.table: t for t in summary.tables}
    assert moved["customers"].moved == 80 and moved["customers"].batches == 12
    assert moved["orders"].skipped and moved["orders"].moved == 0  # no TTL: left alone
    assert _counts(populated) == (20, 5, 80)  # current and recent history stayed
    assert moved["customers"].oldest_remaining is not None
    assert moved["customers"].oldest_remaining > _now(populated) - DAY

    again = archive(populated)
    assert again.moved == 0 and _counts(populated) == (20, 5, 80)  # nothing left to do
    # A TTL on the command line overrides the catalog: the recent history goes too.
    assert archive(populated, ttl=timedelta(seconds=1) / 1000, tables=["customers"]).moved == 5
    assert _counts(populated) == (20, 0, 85)


def test_reads_and_exports_see_archived_versions(populated: Engine, tmp_path: Path) -> None:
    now = _now(populated)
    past = now - 62 * DAY  # inside the archived stretch
    before = export(populated, tmp_path / "before", as_of=past, tables=["customers"])
    with Session(populated) as session:
        old_names = [v.name for v in history(session, Customer, 3)]
        all_versions = len(session.execute(versions(Customer)).all())
    assert len(old_names) == 6

    archive(populated)
    assert _counts(populated)[2] == 80

    after = export(populated, tmp_path / "after", as_of=past, tables=["customers"])
    assert after.content_digest == before.content_digest
    for a, b in zip(before.files, after.files, strict=True):
        assert (tmp_path / "before" / a.path).read_bytes() == \
            (tmp_path / "after" / b.path).read_bytes()
    with Session(populated) as session:
        assert [v.name for v in history(session, Customer, 3)] == old_names
        assert len(session.execute(versions(Customer)).all()) == all_versions
        gold = versions(Customer, between=(past, past)).where(Customer.id == 3)
        assert [r.name for r in session.execute(gold)] == ["c3 v2"]
        # current reads are unaffected
        assert session.scalars(select(func.count()).select_from(Customer)).one() == 20
        # PostgreSQL reads the archive as a child table, SQLite through a union.
        old = session.get(Customer, 3, options=[as_of(past)])
        assert old is not None and old.name == "c3 v2"
        listed = session.scalars(select(Customer).options(as_of(past)).order_by(Customer.id))
        assert [c.name for c in listed] == [r.name for r in session.execute(
            versions(Customer, between=(past, past)).order_by(Customer.id))]
        recent = session.get(Customer, 10, options=[as_of(now)])
        assert recent is not None and recent.name == "c10 v4"


def test_sqlite_never_reuses_an_archived_id(sqlite_url: URL) -> None:
    engine = sa.create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    _old_history(engine, range(1, 4), 2, datetime.now(UTC) - 90 * DAY)
    with Session(engine) as session, session.begin():
        session.delete(session.get(Customer, 3))
    with engine.begin() as conn, triggers.maintenance(conn):  # as if deleted long ago
        guard.remove(conn, "customers")  # which takes a period the guard would refuse
        conn.exec_driver_sql("UPDATE customers SET expired_at = '2020-01-01 00:00:00.000000' "
                             "WHERE id = 3 AND expired_at > '2021-01-01'")
    archive(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM customers WHERE id = 3"
                                    ).scalar_one() == 0
    with Session(engine) as session, session.begin():
        session.add(Customer(name="new"))
    with Session(engine) as session:
        assert session.scalars(select(Customer.id).where(Customer.name == "new")).one() == 4
    engine.dispose()


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "temporal", *args], capture_output=True,
                          text=True, timeout=timeout)


def _address(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def test_cli_honours_the_model_ttl_with_only_a_url(populated: Engine, url: URL) -> None:
    done = _cli("archive", "--url", _address(url))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("archived 80 versions")
    assert "customers: 80" in done.stdout and "orders: skipped, no TTL" in done.stdout
    assert _counts(populated) == (20, 5, 80)

    done = _cli("archive", "--url", _address(url), "--json", "--dry-run", "--ttl", "1s")
    assert done.returncode == 0, done.stderr
    import json

    report = json.loads(done.stdout)
    assert report["dry_run"] and report["moved"] == 5
    assert _counts(populated) == (20, 5, 80)

    for args, message in [(["--table", "nope"], "'nope' is not a registered temporal table"),
                          (["--ttl", "soon"], "cannot read 'soon' as a duration"),
                          (["--ttl", "0s"], "a TTL must be positive")]:
        done = _cli("archive", "--url", _address(url), *args)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert _counts(populated) == (20, 5, 80)


def test_a_second_archiver_exits_at_once(populated: Engine, url: URL) -> None:
    from temporal import archival

    with archival._single_runner(populated):
        with pytest.raises(ArchiverBusyError):
            archive(populated)
        done = _cli("archive", "--url", _address(url))
        assert done.returncode == 75 and "another archiver" in done.stderr
    assert _counts(populated) == (20, 85, 0)  # nothing moved while it was busy
    assert archive(populated).moved == 80  # the lock is free again


def test_every_runs_on_a_schedule_and_stops_on_sigterm(populated: Engine, url: URL) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "temporal", "archive", "--every", "1h", "--url", _address(url)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("archived 80 versions"), first
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


# -- PostgreSQL: kills, rivals, writers ---------------------------------------------------

KILL_KEYS = 10_000  # x 10 expired versions = 100,000 to move


def _all_versions(engine: Engine) -> list[tuple[int, datetime]]:
    with engine.connect() as conn:
        return sorted(conn.exec_driver_sql("SELECT id, created_at FROM customers").all())


@pytest.mark.postgres
def test_kill_9_mid_run_loses_and_duplicates_nothing(pg_engine: Engine, pg_url: URL) -> None:
    Base.metadata.create_all(pg_engine)
    _old_history(pg_engine, range(1, KILL_KEYS + 1), 10, _now(pg_engine) - 60 * DAY)
    everything = _all_versions(pg_engine)  # hot + archive (the archive is a child table)
    assert len(everything) == KILL_KEYS * 11

    process = subprocess.Popen([sys.executable, "-m", "temporal", "archive", "--batch-size",
                                "2000", "--url", _address(pg_url)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        archived = _counts(pg_engine)[2]
        if archived >= 10_000:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    current, hot, archived = _counts(pg_engine)
    assert 0 < archived < 100_000, "the kill should land mid-run"
    assert (current, hot + archived) == (KILL_KEYS, 100_000)
    assert _all_versions(pg_engine) == everything  # every version exactly once

    done = _cli("archive", "--url", _address(pg_url))  # the next run finishes the job
    assert done.returncode == 0, done.stderr
    assert _counts(pg_engine) == (KILL_KEYS, 0, 100_000)
    assert _all_versions(pg_engine) == everything


@pytest.mark.postgres
def test_two_archivers_started_together_never_double_move(pg_engine: Engine, pg_url: URL
                                                          ) -> None:
    Base.metadata.create_all(pg_engine)
    _old_history(pg_engine, range(1, 2001), 10, _now(pg_engine) - 60 * DAY)
    everything = _all_versions(pg_engine)
    processes = [subprocess.Popen([sys.executable, "-m", "temporal", "archive", "--json",
                                   "--batch-size", "500", "--url", _address(pg_url)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    results = [(p.wait(timeout=120), p.stdout.read() if p.stdout else "") for p in processes]
    assert {code for code, _ in results} <= {0, 75}
    import json

    moved = sum(json.loads(out)["moved"] for code, out in results if code == 0)
    assert moved == 20_000  # each version moved once, whoever moved it
    assert _counts(pg_engine) == (2000, 0, 20_000)
    assert _all_versions(pg_engine) == everything


@pytest.mark.postgres
def test_writers_keep_writing_during_archival(pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    _old_history(pg_engine, range(1, 5001), 10, _now(pg_engine) - 60 * DAY)
    errors: list[BaseException] = []
    commits = [0]
    done = threading.Event()

    def writer() -> None:
        n = 0
        while not done.is_set():
            n += 1
            try:
                with Session(pg_engine) as session, session.begin():
                    customer = session.get(Customer, 1 + n % 5000)
                    assert customer is not None
                    customer.score = float(n)
                commits[0] += 1
            except BaseException as error:
                errors.append(error)
                return

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        summary = archive(pg_engine, batch_size=1000)
    finally:
        done.set()
        thread.join(timeout=60)
    assert errors == []
    assert summary.moved == 50_000 and commits[0] > 0
    current, hot, archived = _counts(pg_engine)
    assert current == 5000 and archived == 50_000 and hot == commits[0]


def test_migrations_carry_the_archive_along(populated: Engine) -> None:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    archive(populated)
    with populated.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.add_temporal_column("customers", sa.Column("segment", sa.String(10), nullable=False),
                               fill="now", history_fill="then")
    with populated.connect() as conn:
        archived = conn.exec_driver_sql("SELECT DISTINCT segment FROM customers_archive").all()
        assert archived == [("then",)]
        only = "ONLY " if populated.dialect.name == "postgresql" else ""
        hot = conn.exec_driver_sql(
            f"SELECT expired_at IS NULL, segment FROM {only}customers GROUP BY 1, 2 ORDER BY 1"
        ).all()
        assert [tuple(r) for r in hot] == [(False, "then"), (True, "now")]
    with populated.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.drop_temporal_column("customers", "segment")
        op.make_plain("customers")
    with populated.connect() as conn:
        assert not sa.inspect(conn).has_table("customers_archive")
        assert conn.exec_driver_sql("SELECT count(*) FROM customers").scalar_one() == 20


def test_a_registered_table_that_is_gone_is_skipped_not_fatal(populated: Engine) -> None:
    with populated.begin() as conn:  # dropped behind the library's back: the catalog is stale
        conn.exec_driver_sql("DROP TABLE orders")
    summary = archive(populated, ttl=timedelta(days=30))
    found = {t.table: t for t in summary.tables}
    assert found["orders"].skipped == "registered but missing from the database"
    assert found["customers"].moved == 80

"""Parallel exports (``jobs``): one snapshot shared by every worker, the same bytes as
one worker, the digest of all tables over the tables' digests, and clean failures."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from temporal import ExportError, changes, export, transaction_time, verify
from temporal.cli import app
from temporal.manifest import CSV_ROWS, CSV_ROWS_2, read_manifest
from temporal.parallel import join_snapshot, share_snapshot
from tests.models import Base, Customer, Line, Order
from tests.test_verification import forge

TABLES = ["customers", "lines", "orders"]


@pytest.fixture
def history(engine: Engine) -> tuple[Engine, datetime, datetime]:
    return make_history(engine)


@pytest.fixture
def pg_history(pg_engine: Engine) -> tuple[Engine, datetime, datetime]:
    return make_history(pg_engine)


def make_history(engine: Engine) -> tuple[Engine, datetime, datetime]:
    """Three tables with history; (engine, a moment before the last changes, a moment
    before everything)."""
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        start = transaction_time(s) - timedelta(microseconds=1)
        s.execute(insert(Customer), [{"id": i, "name": f"c{i}", "score": i / 7}
                                     for i in range(1, 3001)])
        s.execute(insert(Order), [{"id": i, "customer_id": i % 300, "amount": i}
                                  for i in range(1, 2001)])
        s.execute(insert(Line), [{"order_no": f"o{i % 50}", "line_no": i, "sku": f"s{i}",
                                  "qty": i % 9} for i in range(1, 1501)])
    with Session(engine) as s, s.begin():
        s.execute(update(Customer).where(Customer.id % 3 == 0).values(tier="gold"))
        s.execute(update(Order).where(Order.id < 500).values(amount=Order.amount + 1))
        moment = transaction_time(s)
    with Session(engine) as s, s.begin():
        s.execute(update(Customer).values(tier="late"))
    return engine, moment, start


def files_of(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_any_number_of_jobs_writes_the_same_bytes(
        history: tuple[Engine, datetime, datetime], tmp_path: Path, fmt: str) -> None:
    engine, moment, _ = history
    outs = {}
    for jobs in (1, 2, 3, 8):  # fewer, as many and more workers than tables
        out = tmp_path / f"jobs{jobs}"
        export(engine, out, as_of=moment, tables=TABLES, format=fmt, jobs=jobs,
               rows_per_file=700)
        outs[jobs] = files_of(out)
        assert verify(out, engine).ok, verify(out, engine).problems
    assert outs[1] == outs[2] == outs[3] == outs[8]
    assert sum(name.endswith(fmt) for name in outs[1]) > len(TABLES)  # several parts each


def test_the_digest_of_all_tables_hashes_their_digests(
        history: tuple[Engine, datetime, datetime], tmp_path: Path) -> None:
    engine, moment, _ = history
    out = tmp_path / "x"
    manifest = export(engine, out, as_of=moment, tables=TABLES, jobs=2)
    digest = manifest.content_digest
    assert digest["algorithm"] == CSV_ROWS
    # Each table's digest is sha256 over its CSV part files' data lines, in order.
    for table in TABLES:
        rows = hashlib.sha256()
        for part in sorted((out / table).glob("part-*.csv")):
            rows.update(part.read_bytes().split(b"\n", 1)[1])
        assert digest[f"table:{table}"] == rows.hexdigest()
    pairs = json.dumps([[t, digest[f"table:{t}"]] for t in sorted(TABLES)],
                       separators=(",", ":")).encode()
    assert digest["all"] == hashlib.sha256(pairs).hexdigest()
    single = export(engine, tmp_path / "one", as_of=moment, tables=["orders"])
    assert single.content_digest["all"] == single.content_digest["table:orders"]


def test_a_previous_versions_digest_of_all_tables_still_verifies(
        history: tuple[Engine, datetime, datetime], tmp_path: Path) -> None:
    """Manifests naming "encoding 2" hash every table's rows in turn for ``all``."""
    engine, moment, _ = history
    out = tmp_path / "old"
    export(engine, out, as_of=moment, tables=TABLES)
    in_turn = hashlib.sha256()
    for table in TABLES:
        for part in sorted((out / table).glob("part-*.csv")):
            in_turn.update(part.read_bytes().split(b"\n", 1)[1])

    def as_previous(body: dict[str, Any]) -> None:
        body["content_digest"]["algorithm"] = CSV_ROWS_2
        body["content_digest"]["all"] = in_turn.hexdigest()

    forge(out, as_previous)
    assert read_manifest(out).content_digest["algorithm"] == CSV_ROWS_2
    report = verify(out, engine)  # the files and a re-export made the old way
    assert report.ok, report.problems

    def edited(body: dict[str, Any]) -> None:
        body["content_digest"]["all"] = "0" * 64

    forge(out, edited)
    problems = verify(out).problems
    assert problems == ["manifest: its content digest for all tables does not match the rows "
                        "of its own files (the manifest was edited)"]


@pytest.mark.postgres
def test_workers_join_the_exports_snapshot(pg_engine: Engine) -> None:
    """A worker sees what the export's transaction sees, not what committed since."""
    with pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (n int)"))
        conn.execute(text("INSERT INTO notes VALUES (1)"))
    with pg_engine.connect() as first, pg_engine.connect() as worker, \
            pg_engine.connect() as fresh:
        first.execution_options(isolation_level="REPEATABLE READ")
        first.begin()
        assert first.execute(text("SELECT count(*) FROM notes")).scalar_one() == 1
        snapshot_id = share_snapshot(first)
        with pg_engine.begin() as writer:
            writer.execute(text("INSERT INTO notes VALUES (2), (3)"))
        join_snapshot(worker, snapshot_id)
        assert worker.execute(text("SELECT count(*) FROM notes")).scalar_one() == 1
        assert fresh.execute(text("SELECT count(*) FROM notes")).scalar_one() == 3
        with pytest.raises(ExportError, match="not a snapshot id"):
            join_snapshot(fresh, "1'; DROP TABLE notes; --")
        first.rollback()
        worker.rollback()


@pytest.mark.postgres
def test_a_parallel_export_reads_one_moment_while_the_tables_change(
        pg_history: tuple[Engine, datetime, datetime], tmp_path: Path) -> None:
    """Once the export has begun, a change to any table - here each table's rows
    physically removed, past the triggers - does not reach any worker."""
    engine, moment, _ = pg_history
    export(engine, tmp_path / "before", as_of=moment, tables=TABLES)
    removed: list[str] = []

    def meddle(progress: Any) -> None:
        if not removed:
            removed.append(progress.table)
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                for table in TABLES:
                    conn.execute(text(f"DELETE FROM {table}"))

    export(engine, tmp_path / "during", as_of=moment, tables=TABLES, jobs=3,
           on_progress=meddle)
    assert removed
    assert files_of(tmp_path / "during") == files_of(tmp_path / "before")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar_one() == 0


def test_one_failing_table_stops_the_export_and_leaves_nothing(
        history: tuple[Engine, datetime, datetime], tmp_path: Path) -> None:
    engine, moment, _ = history
    out = tmp_path / "x"

    def fail_on_orders(progress: Any) -> None:
        if progress.table == "orders" and progress.rows > 0:
            raise RuntimeError("the disk is on fire")

    with pytest.raises(RuntimeError, match="the disk is on fire"):
        export(engine, out, as_of=moment, tables=TABLES, jobs=3, on_progress=fail_on_orders,
               rows_per_file=500)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("test.db")] == []
    if engine.dialect.name == "postgresql":  # no worker left behind, no transaction open
        with create_engine(engine.url).connect() as conn:
            others = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'")).scalar_one()
        assert others == 0
    export(engine, out, as_of=moment, tables=TABLES, jobs=3)  # and it can simply be retried
    assert verify(out, engine).ok


def test_a_parallel_change_feed_writes_the_same_bytes(
        history: tuple[Engine, datetime, datetime], tmp_path: Path) -> None:
    engine, moment, start = history
    changes(engine, tmp_path / "one", since=start, until=moment, jobs=1)
    changes(engine, tmp_path / "three", since=start, until=moment, jobs=3)
    assert files_of(tmp_path / "one") == files_of(tmp_path / "three")
    assert verify(tmp_path / "three", engine).ok


@pytest.mark.postgres
def test_a_pool_too_small_for_the_jobs_is_one_clear_error(
        pg_history: tuple[Engine, datetime, datetime], tmp_path: Path) -> None:
    engine, moment, _ = pg_history
    small = create_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    try:
        with pytest.raises(ExportError, match="could not open 3 connections for 3 jobs"):
            export(small, tmp_path / "x", as_of=moment, tables=TABLES, jobs=3)
        assert not (tmp_path / "x").exists()
        export(small, tmp_path / "x", as_of=moment, tables=TABLES, jobs=1)
    finally:
        small.dispose()


@pytest.mark.parametrize("jobs", [0, -2, 1.5, True])
def test_jobs_must_be_a_positive_whole_number(
        history: tuple[Engine, datetime, datetime], tmp_path: Path, jobs: Any) -> None:
    engine, moment, _ = history
    with pytest.raises(ExportError, match="jobs must be a whole number of at least 1"):
        export(engine, tmp_path / "x", as_of=moment, tables=TABLES, jobs=jobs)
    assert not (tmp_path / "x").exists()


def test_the_command_line_takes_jobs(history: tuple[Engine, datetime, datetime],
                                     tmp_path: Path) -> None:
    engine, moment, _ = history
    url = engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    args = ["export", "--as-of", moment.isoformat(), "--out", str(tmp_path / "x"),
            "--url", url, *[arg for t in TABLES for arg in ("--table", t)]]
    bad = runner.invoke(app, [*args, "--jobs", "0"])
    assert bad.exit_code == 2 and "--jobs" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists()
    good = runner.invoke(app, [*args, "--jobs", "2"])
    assert good.exit_code == 0, good.output
    export(engine, tmp_path / "y", as_of=moment, tables=TABLES)
    assert files_of(tmp_path / "x") == files_of(tmp_path / "y")


def big_customers(engine: Engine) -> datetime:
    """Customers big enough to take a second to export, a few lines; a moment after."""
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (id, name, tier, revision_note) "
                          "SELECT g, 'c' || g, 'basic', 'created' "
                          "FROM generate_series(1, 300000) AS g"))
    with Session(engine) as s, s.begin():
        s.execute(insert(Line), [{"order_no": "o", "line_no": i, "sku": "s", "qty": 1}
                                 for i in range(1, 51)])
        return transaction_time(s)


@pytest.mark.postgres
def test_the_failing_tables_error_is_raised_not_a_cancelled_copy(
        pg_engine: Engine, tmp_path: Path) -> None:
    """A worker cancelled in the middle of its COPY (the driver's own error, not
    SQLAlchemy's) must not hide the failure that made the export stop."""
    moment = big_customers(pg_engine)

    def fail_lines(progress: Any) -> None:
        if progress.table == "lines" and progress.rows > 0:
            raise RuntimeError("the disk is on fire")

    for _ in range(3):
        with pytest.raises(RuntimeError, match="the disk is on fire"):
            export(pg_engine, tmp_path / "x", as_of=moment, tables=TABLES, jobs=3,
                   on_progress=fail_lines)
        assert not (tmp_path / "x").exists()


@pytest.mark.postgres
def test_a_worker_done_early_is_not_left_idle_in_its_transaction(
        pg_engine: Engine, tmp_path: Path) -> None:
    """With idle_in_transaction_session_timeout set, a worker that has written its
    small tables must not sit in its transaction until the big one is done: the server
    would end its session, and the export fail though every file was written."""
    moment = big_customers(pg_engine)
    with pg_engine.connect() as conn:
        database = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(text(f'ALTER DATABASE "{database}" '
                          "SET idle_in_transaction_session_timeout = '200ms'"))
        conn.commit()
    pg_engine.dispose()
    export(pg_engine, tmp_path / "one", as_of=moment, tables=TABLES)
    export(pg_engine, tmp_path / "three", as_of=moment, tables=TABLES, jobs=3)
    assert files_of(tmp_path / "one") == files_of(tmp_path / "three")


@pytest.mark.postgres
def test_a_database_url_gets_a_connection_for_every_job(pg_engine: Engine,
                                                         tmp_path: Path) -> None:
    """Given a URL (the command line always is), the engine is the library's own: it
    must not refuse --jobs 17 because SQLAlchemy's default pool stops at 15."""
    from sqlalchemy import Integer
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    from temporal import Temporal

    class Many(DeclarativeBase):
        pass

    names = [f"t{i:02d}" for i in range(17)]
    for i, name in enumerate(names):
        type(f"T{i}", (Temporal, Many), {"__tablename__": name,
                                         "id": mapped_column(Integer, primary_key=True)})
    Many.metadata.create_all(pg_engine)
    with pg_engine.begin() as conn:
        for name in names:
            conn.execute(text(f"INSERT INTO {name} (id) SELECT generate_series(1, 20)"))
    with Session(pg_engine) as s, s.begin():
        moment = transaction_time(s)
    url = pg_engine.url.render_as_string(hide_password=False)
    export(url, tmp_path / "one", as_of=moment, tables=names)
    export(url, tmp_path / "all", as_of=moment, tables=names, jobs=len(names))
    assert files_of(tmp_path / "one") == files_of(tmp_path / "all")

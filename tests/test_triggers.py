"""Raw writers are versioned by the database: psycopg / sqlite3 connections that never
go through the library (as psql, a migration's data fix, COPY or another service would)."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import URL, Engine, text
from sqlalchemy.orm import Session

from temporal import (
    ConflictError,
    archive,
    as_of,
    catalog,
    export,
    history,
    transaction_time,
    triggers,
)
from temporal.clock import UTC
from tests.models import Base, Customer, Line


class Raw:
    """A DB-API connection of its own, with no SQLAlchemy or temporal in the way."""

    def __init__(self, url: URL) -> None:
        self.dialect = url.get_backend_name()
        if self.dialect == "postgresql":
            self.conn: Any = psycopg.connect(host=url.host, port=url.port, user=url.username,
                                             dbname=url.database)
        else:
            self.conn = sqlite3.connect(str(url.database), timeout=10, isolation_level=None)

    def begin(self) -> None:
        self.conn.execute("BEGIN") if self.dialect == "sqlite" else None

    def run(self, sql: str, *params: Any) -> Any:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        return self.conn.execute(sql, params)

    def commit(self) -> None:
        if self.dialect == "sqlite":
            self.conn.execute("COMMIT")
        else:
            self.conn.commit()

    def rollback(self) -> None:
        if self.dialect == "sqlite":
            self.conn.execute("ROLLBACK")
        else:
            self.conn.rollback()

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Customer(id=1, name="a", tier="basic"), Customer(id=2, name="b"),
                   Line(order_no="o1", line_no=1, sku="x", qty=1)])
    yield engine


@pytest.fixture
def raw(db: Engine) -> Iterator[Raw]:
    r = Raw(db.url)
    yield r
    r.close()


def versions(engine: Engine, cid: int) -> list[dict[str, Any]]:
    t = Customer.__table__
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(t).where(t.c.id == cid).order_by(t.c.created_at))]


def assert_contiguous(rows: list[dict[str, Any]]) -> None:
    """One key's history: each version ends where the next begins, at most one current."""
    for before, after in itertools.pairwise(rows):
        assert before["expired_at"] == after["created_at"]
        assert before["created_at"] < before["expired_at"]
    assert all(r["expired_at"] is not None for r in rows[:-1])


def test_a_raw_insert_update_and_delete_are_versioned(db: Engine, raw: Raw) -> None:
    raw.begin()
    raw.run("INSERT INTO customers (id, name, tier, status, revision_note) "
            "VALUES (7, 'raw', 'basic', 'active', 'x')")
    raw.commit()
    (inserted,) = versions(db, 7)
    assert inserted["expired_at"] is None and inserted["created_at"] is not None
    raw.begin()
    raw.run("UPDATE customers SET tier = 'gold' WHERE id = 7")
    raw.commit()
    old, new = versions(db, 7)
    assert (old["tier"], new["tier"]) == ("basic", "gold")
    assert old["created_at"] == inserted["created_at"]  # the old version, kept as it was
    assert {k: v for k, v in old.items() if k not in ("created_at", "expired_at", "tier")} \
        == {k: v for k, v in new.items() if k not in ("created_at", "expired_at", "tier")}
    raw.begin()
    raw.run("DELETE FROM customers WHERE id = 7")
    raw.commit()
    rows = versions(db, 7)
    assert len(rows) == 2 and rows[-1]["expired_at"] is not None
    assert_contiguous(rows)
    with Session(db) as s:
        assert s.get(Customer, 7) is None
        at = new["created_at"]
        assert s.get(Customer, 7, options=[as_of(at)]).tier == "gold"


def test_a_raw_update_typed_on_a_key_with_history_touches_the_current_version_only(
        db: Engine, raw: Raw) -> None:
    with Session(db) as s, s.begin():
        s.get(Customer, 1).name = "a2"
    with Session(db) as s, s.begin():
        s.get(Customer, 1).name = "a3"
    history = versions(db, 1)[:-1]
    raw.begin()
    cursor = raw.run("UPDATE customers SET tier = 'gold' WHERE id = 1")
    raw.commit()
    assert cursor.rowcount == 1  # the current version; history is skipped
    rows = versions(db, 1)
    assert rows[: len(history)] == history  # history rows exactly as they were
    assert [r["tier"] for r in rows] == ["basic", "basic", "basic", "gold"]
    assert_contiguous(rows)
    raw.begin()
    raw.run("DELETE FROM customers WHERE id = 1")
    raw.commit()
    assert versions(db, 1)[:-1] == rows[:-1] and versions(db, 1)[-1]["expired_at"] is not None


def test_a_set_based_raw_update_carries_every_unchanged_column(db: Engine, raw: Raw) -> None:
    before = {r["id"]: r for r in (versions(db, 1)[0], versions(db, 2)[0])}
    raw.begin()
    raw.run("UPDATE customers SET score = 1.5")
    raw.commit()
    for cid in (1, 2):
        old, new = versions(db, cid)
        assert old == {**before[cid], "expired_at": new["created_at"]}
        assert new == {**before[cid], "score": 1.5, "created_at": new["created_at"],
                       "expired_at": None}


def test_period_columns_and_keys_are_refused_as_integrity_errors(db: Engine, raw: Raw) -> None:
    error = psycopg.errors.IntegrityError if raw.dialect == "postgresql" else \
        sqlite3.IntegrityError
    statements = [
        "UPDATE customers SET expired_at = created_at WHERE id = 1",
        "UPDATE customers SET created_at = '2001-01-01' WHERE id = 1",
        "UPDATE customers SET id = 9 WHERE id = 1",
        "INSERT INTO customers (id, name, tier, status, revision_note, created_at) "
        "VALUES (8, 'x', 'basic', 'active', 'x', '2001-01-01')",
    ]
    for statement in statements:
        raw.begin()
        with pytest.raises(error, match="temporal"):
            raw.run(statement)
        raw.rollback()
    assert len(versions(db, 1)) == 1 and versions(db, 8) == [] and versions(db, 9) == []


@pytest.mark.postgres
def test_postgresql_one_version_per_key_per_raw_transaction(pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    raw = Raw(pg_engine.url)
    raw.run("INSERT INTO customers (id, name, tier, status, revision_note) "
            "VALUES (1, 'a', 'basic', 'active', 'x'), (2, 'b', 'basic', 'active', 'x')")
    raw.run("UPDATE customers SET name = 'a1' WHERE id = 1")  # insert + update: one row
    raw.commit()
    assert [r["name"] for r in versions(pg_engine, 1)] == ["a1"]
    raw.run("UPDATE customers SET name = 'a2' WHERE id = 1")
    raw.run("UPDATE customers SET name = 'a3' WHERE id = 1")
    raw.run("UPDATE customers SET tier = 'gold' WHERE id = 1")
    raw.run("UPDATE customers SET name = 'b2' WHERE id = 2")
    raw.run("DELETE FROM customers WHERE id = 2")  # update + delete: the old values, expired
    raw.run("INSERT INTO customers (id, name, tier, status, revision_note) "
            "VALUES (3, 'c', 'basic', 'active', 'x')")
    raw.run("DELETE FROM customers WHERE id = 3")  # insert + delete: nothing
    raw.commit()
    one = versions(pg_engine, 1)
    assert [(r["name"], r["tier"]) for r in one] == [("a1", "basic"), ("a3", "gold")]
    two = versions(pg_engine, 2)
    assert [(r["name"], r["expired_at"] is None) for r in two] == [("b", False)]
    assert two[0]["expired_at"] == one[1]["created_at"]  # one stamp for the transaction
    assert versions(pg_engine, 3) == []
    raw.close()


def test_sqlite_one_stamp_per_raw_statement_keeps_history_contiguous(sqlite_url: URL) -> None:
    engine = sa.create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    raw = Raw(sqlite_url)
    raw.begin()
    raw.run("INSERT INTO customers (id, name, tier, status, revision_note) "
            "VALUES (1, 'a', 'basic', 'active', 'x'), (2, 'b', 'basic', 'active', 'x')")
    for n in range(5):
        raw.run("UPDATE customers SET name = ? WHERE id = 1", f"a{n}")
    raw.run("UPDATE customers SET tier = 'gold'")
    raw.commit()
    one, two = versions(engine, 1), versions(engine, 2)
    assert [r["name"] for r in one] == ["a", "a0", "a1", "a2", "a3", "a4", "a4"]
    assert_contiguous(one)
    assert_contiguous(two)
    assert one[-1]["created_at"] == two[-1]["created_at"]  # one statement, one stamp
    raw.close()
    engine.dispose()


def test_a_rolled_back_savepoint_of_a_raw_writer_leaves_no_trace(db: Engine, raw: Raw) -> None:
    raw.begin()
    raw.run("UPDATE customers SET name = 'kept' WHERE id = 2")
    raw.run("SAVEPOINT s1")
    raw.run("UPDATE customers SET name = 'gone' WHERE id = 1")
    raw.run("DELETE FROM customers WHERE id = 2")
    raw.run("ROLLBACK TO SAVEPOINT s1")
    raw.run("RELEASE SAVEPOINT s1")
    raw.run("UPDATE customers SET tier = 'gold' WHERE id = 1")
    raw.commit()
    assert [(r["name"], r["tier"]) for r in versions(db, 1)] == [("a", "basic"), ("a", "gold")]
    assert [r["name"] for r in versions(db, 2)] == ["b", "kept"]
    assert_contiguous(versions(db, 1))


@pytest.mark.postgres
def test_postgresql_copy_loads_are_stamped(pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    raw = Raw(pg_engine.url)
    with raw.conn.cursor() as cur:
        with cur.copy("COPY customers (id, name, tier, status, revision_note) FROM STDIN") as c:
            for i in range(1, 4):
                c.write_row((i, f"c{i}", "basic", "active", "x"))
        stamp = cur.execute("SELECT temporal_stamp()").fetchone()[0]
    raw.commit()
    rows = [versions(pg_engine, i) for i in range(1, 4)]
    assert all(len(r) == 1 and r[0]["created_at"] == stamp and r[0]["expired_at"] is None
               for r in rows)
    raw.close()


def test_library_and_raw_writes_in_one_transaction_share_its_stamp(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.get(Customer, 1).name = "library"
        s.execute(text("UPDATE customers SET tier = 'raw' WHERE id = 2"))
        s.execute(text("UPDATE customers SET score = 2.5 WHERE id = 1"))  # its own version
        s.add(Customer(id=5, name="orm"))
        s.flush()
        s.execute(text("INSERT INTO customers (id, name, tier, status, revision_note) "
                       "VALUES (6, 'raw', 'basic', 'active', 'x')"))
        stamp = transaction_time(s)
    for cid in (2, 5, 6):
        assert versions(db, cid)[-1]["created_at"] == stamp
    one = versions(db, 1)
    assert [(r["name"], r["score"], r["created_at"] == stamp) for r in one] == [
        ("a", None, False), ("library", 2.5, True)]


@pytest.mark.postgres
def test_postgresql_a_raw_write_first_lends_the_library_its_stamp(pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s, s.begin():
        s.add(Customer(id=1, name="a"))
    with Session(pg_engine) as s, s.begin():
        s.execute(text("UPDATE customers SET tier = 'raw' WHERE id = 1"))
        s.get(Customer, 1).name = "library"  # the version the raw write made: in place
        s.flush()
        stamp = transaction_time(s)
    rows = versions(pg_engine, 1)
    assert [(r["name"], r["tier"]) for r in rows] == [("a", "basic"), ("library", "raw")]
    assert rows[-1]["created_at"] == stamp


@pytest.mark.postgres
def test_postgresql_a_savepoint_that_took_the_stamp_does_not_split_the_transaction(
        pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s, s.begin():
        s.add_all([Customer(id=1, name="a"), Customer(id=2, name="b")])
    with Session(pg_engine) as s, s.begin():
        with s.begin_nested() as nested:
            s.get(Customer, 1).name = "gone"
            s.flush()  # the library stamps inside the savepoint
            nested.rollback()
        s.execute(text("UPDATE customers SET tier = 'raw' WHERE id = 2"))
        s.get(Customer, 1).name = "kept"
        s.flush()
        stamp = transaction_time(s)
    assert versions(pg_engine, 1)[-1]["created_at"] == stamp
    assert versions(pg_engine, 2)[-1]["created_at"] == stamp


@pytest.mark.postgres
def test_postgresql_racing_raw_writers_the_older_stamp_is_refused(pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s, s.begin():
        s.add_all([Customer(id=1, name="a"), Customer(id=2, name="b")])
    older, younger = Raw(pg_engine.url), Raw(pg_engine.url)
    older.run("UPDATE customers SET name = 'b-old' WHERE id = 2")  # takes its stamp first
    younger.run("UPDATE customers SET name = 'a-young' WHERE id = 1")
    younger.commit()
    with pytest.raises(psycopg.errors.ExclusionViolation, match="younger transaction"):
        older.run("UPDATE customers SET name = 'a-old' WHERE id = 1")
    older.rollback()
    # Blocked on the younger writer's row lock, then refused once it commits.
    older.run("UPDATE customers SET name = 'b-old' WHERE id = 2")
    younger.run("UPDATE customers SET name = 'a-young2' WHERE id = 1")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            older.run("UPDATE customers SET name = 'a-old' WHERE id = 1")
        except BaseException as error:
            errors.append(error)

    waiting = threading.Thread(target=write)
    waiting.start()
    waiting.join(0.3)
    younger.commit()
    waiting.join(10)
    assert len(errors) == 1 and isinstance(errors[0], psycopg.errors.ExclusionViolation)
    older.rollback()
    assert [r["name"] for r in versions(pg_engine, 1)] == ["a", "a-young", "a-young2"]
    # Through the library, the same race is a ConflictError.
    with Session(pg_engine) as s:
        s.execute(text("UPDATE customers SET name = 'b-old' WHERE id = 2"))
        with Session(pg_engine) as other, other.begin():
            other.execute(text("UPDATE customers SET name = 'a-other' WHERE id = 1"))
        with pytest.raises(ConflictError):
            s.execute(text("UPDATE customers SET name = 'a-old' WHERE id = 1"))
    older.close()
    younger.close()


def test_an_export_before_raw_writes_is_reproduced_after_them(db: Engine, raw: Raw,
                                                               tmp_path: Path) -> None:
    with db.connect() as conn:
        at = conn.execute(sa.select(sa.func.max(Customer.__table__.c.created_at))).scalar_one()
    at = at + timedelta(microseconds=1)
    first = export(db, tmp_path / "first", as_of=at, tables=["customers", "lines"])
    raw.begin()
    raw.run("UPDATE customers SET name = 'changed', tier = 'gold'")
    raw.run("DELETE FROM lines")
    raw.run("INSERT INTO customers (id, name, tier, status, revision_note) "
            "VALUES (3, 'new', 'basic', 'active', 'x')")
    raw.commit()
    second = export(db, tmp_path / "second", as_of=at, tables=["customers", "lines"])
    assert first.content_digest == second.content_digest
    for a, b in zip(first.files, second.files, strict=True):
        assert (tmp_path / "first" / a.path).read_bytes() == (tmp_path / "second" /
                                                               b.path).read_bytes()


@pytest.mark.postgres
def test_postgresql_an_export_waits_for_an_open_raw_writer(pg_engine: Engine,
                                                          tmp_path: Path) -> None:
    from temporal.export import ExportError

    Base.metadata.create_all(pg_engine)
    raw = Raw(pg_engine.url)
    raw.run("INSERT INTO customers (id, name, tier, status, revision_note) "
            "VALUES (1, 'late', 'basic', 'active', 'x')")  # stamped, not committed
    with pg_engine.connect() as conn:
        at = conn.execute(text("SELECT clock_timestamp()")).scalar_one().astimezone(UTC)
    with pytest.raises(ExportError, match="still open"):
        export(pg_engine, tmp_path / "e", as_of=at, tables=["customers"], wait=0.3)
    raw.commit()
    manifest = export(pg_engine, tmp_path / "e2", as_of=at, tables=["customers"], wait=5)
    assert manifest.files[0].rows == 1  # the late commit is in, and stays in
    raw.close()


def test_archival_moves_raw_written_history_and_raw_writers_cannot_touch_it(
        db: Engine, raw: Raw) -> None:
    raw.begin()
    raw.run("UPDATE customers SET name = 'a2' WHERE id = 1")
    raw.commit()
    raw.begin()
    raw.run("UPDATE customers SET name = 'a3' WHERE id = 1")
    raw.commit()
    before = versions(db, 1)
    summary = archive(db, ttl=timedelta(microseconds=1), tables=["customers"])
    assert summary.tables[0].moved == 2
    raw.begin()
    cursor = raw.run("UPDATE customers SET tier = 'gold' WHERE id = 1")
    raw.commit()
    assert cursor.rowcount == 1
    if raw.dialect == "sqlite":
        raw.begin()
        with pytest.raises(sqlite3.IntegrityError, match="archived history"):
            raw.run("DELETE FROM customers_archive")
        raw.rollback()
    else:
        raw.run("DELETE FROM customers_archive")  # skipped
        raw.run("UPDATE customers_archive SET name = 'forged'")
        raw.commit()
    with db.connect() as conn:
        archived = conn.execute(text("SELECT name FROM customers_archive ORDER BY created_at")
                                ).scalars().all()
    assert archived == ["a", "a2"]
    with Session(db) as s:
        assert [(v.name, v.tier) for v in history(s, Customer, 1)] == [
            ("a", "basic"), ("a2", "basic"), ("a3", "basic"), ("a3", "gold")]
        assert [v.created_at for v in history(s, Customer, 1)][:3] == [
            r["created_at"] for r in before]


def test_triggers_come_with_create_all_and_db_upgrade_and_status_shows_them(
        db: Engine) -> None:
    with db.begin() as conn:
        assert triggers.installed(conn, "customers") and triggers.installed(conn, "lines")
        assert not triggers.installed(conn, "regions")
    assert all(t.guarded for t in catalog.status(db).tables)
    catalog.downgrade(db, "0004")  # as if made by a library without them
    with db.connect() as conn:
        assert not triggers.installed(conn, "customers")
    assert not any(t.guarded for t in catalog.status(db).tables)
    catalog.upgrade(db)
    assert all(t.guarded for t in catalog.status(db).tables)
    raw = Raw(db.url)
    raw.begin()
    raw.run("UPDATE customers SET name = 'after upgrade' WHERE id = 2")
    raw.commit()
    raw.close()
    assert [r["name"] for r in versions(db, 2)] == ["b", "after upgrade"]


def test_library_writes_are_not_versioned_twice(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.get(Customer, 1).name = "orm"
        s.execute(sa.update(Customer).where(Customer.id == 2).values(name="bulk"))
    with Session(db) as s, s.begin():
        s.execute(sa.update(Customer).values(tier="gold"))
        s.delete(s.get(Customer, 2))
    assert [(r["name"], r["tier"]) for r in versions(db, 1)] == [
        ("a", "basic"), ("orm", "basic"), ("orm", "gold")]
    # update + delete in one transaction: one history row with the values from before it
    assert [(r["name"], r["tier"]) for r in versions(db, 2)] == [("b", "basic"), ("bulk", "basic")]
    assert versions(db, 2)[-1]["expired_at"] is not None
    assert_contiguous(versions(db, 1))



def test_migration_operations_install_follow_and_remove_the_triggers(engine: Engine) -> None:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    md = sa.MetaData()
    accounts = sa.Table("accounts", md, sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("name", sa.String(50), nullable=False))
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(accounts.insert(), [{"id": 1, "name": "a"}])
        Operations(MigrationContext.configure(conn)).make_temporal("accounts")
        assert triggers.installed(conn, "accounts")
        conn.execute(text("UPDATE accounts SET name = 'a2' WHERE id = 1"))  # a data fix
        Operations(MigrationContext.configure(conn)).add_temporal_column(
            "accounts", sa.Column("tier", sa.String(20)), fill="basic")
        assert triggers.up_to_date(conn, "accounts")
    raw = Raw(engine.url)
    raw.begin()
    raw.run("UPDATE accounts SET name = 'a3' WHERE id = 1")
    raw.commit()
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, tier, expired_at IS NULL FROM accounts "
                                 "ORDER BY created_at")).all()
    assert [tuple(r) for r in rows] == [("a", "basic", False), ("a2", "basic", False),
                                        ("a3", "basic", True)]  # the new column carried
    with engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).make_plain("accounts")
        assert not triggers.installed(conn, "accounts")
    raw.begin()
    raw.run("UPDATE accounts SET name = 'plain' WHERE id = 1")
    raw.commit()
    raw.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM accounts")).scalars().all() == ["plain"]


def test_sqlite_db_upgrade_reinstalls_triggers_after_a_plain_alter_table(
        sqlite_url: URL) -> None:
    engine = sa.create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE lines ADD COLUMN note VARCHAR(20)")
        assert not triggers.up_to_date(conn, "lines")
    catalog.upgrade(engine)
    with engine.begin() as conn:
        assert triggers.up_to_date(conn, "lines")
    raw = Raw(sqlite_url)
    raw.begin()
    raw.run("INSERT INTO lines (order_no, line_no, sku, qty, note) VALUES ('o', 1, 's', 1, 'n')")
    raw.run("UPDATE lines SET qty = 2 WHERE order_no = 'o'")
    raw.commit()
    raw.close()
    with engine.connect() as conn:
        notes = conn.execute(text("SELECT note, qty FROM lines WHERE order_no = 'o' "
                                  "ORDER BY created_at")).all()
    assert [tuple(r) for r in notes] == [("n", 1), ("n", 2)]
    engine.dispose()


def test_sqlite_an_export_waits_for_an_open_raw_writer(sqlite_url: URL, tmp_path: Path) -> None:
    from temporal import clock
    from temporal.export import ExportError

    engine = sa.create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    raw = Raw(sqlite_url)
    raw.begin()
    raw.run("INSERT INTO customers (id, name, tier, status, revision_note) "
            "VALUES (1, 'late', 'basic', 'active', 'x')")  # holds the write lock
    at = clock.now()
    with pytest.raises(ExportError, match="held the database"):
        export(engine, tmp_path / "e", as_of=at, tables=["customers"], wait=0.3)
    raw.commit()
    first = export(engine, tmp_path / "e2", as_of=at, tables=["customers"], wait=5)
    assert first.files[0].rows == 1
    raw.begin()  # a raw statement after the export stamps later than its as_of
    raw.run("UPDATE customers SET name = 'later' WHERE id = 1")
    raw.commit()
    again = export(engine, tmp_path / "e3", as_of=at, tables=["customers"], wait=5)
    assert again.content_digest == first.content_digest
    raw.close()
    engine.dispose()


@pytest.mark.postgres
def test_postgresql_db_upgrade_replaces_triggers_of_an_older_generation(
        pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    with pg_engine.begin() as conn:
        assert triggers.up_to_date(conn, "customers")
        # As an older library left them: no generation marker, the generic copy.
        conn.exec_driver_sql("COMMENT ON TRIGGER customers_versioned_update ON customers "
                             "IS NULL")
        conn.exec_driver_sql("""
CREATE OR REPLACE FUNCTION customers_versioned_update_copy() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('temporal.copy', '', true);
    RETURN NULL;
END $$""")
        assert not triggers.up_to_date(conn, "customers")
        assert triggers.up_to_date(conn, "lines")
    catalog.upgrade(pg_engine)
    with pg_engine.begin() as conn:
        assert triggers.up_to_date(conn, "customers")
    raw = Raw(pg_engine.url)
    raw.run("INSERT INTO customers (id, name, tier, status, revision_note) "
            "VALUES (1, 'a', 'basic', 'active', 'x')")
    raw.commit()
    raw.run("UPDATE customers SET name = 'a2' WHERE id = 1")
    raw.commit()
    raw.close()
    assert [r["name"] for r in versions(pg_engine, 1)] == ["a", "a2"]  # the copy is back


@pytest.mark.postgres
def test_postgresql_columns_changed_by_plain_alter_table_are_never_lost_silently(
        pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    raw = Raw(pg_engine.url)

    def seen(column: str) -> list[tuple[str, Any]]:
        rows = raw.run(f"SELECT name, {column} FROM customers WHERE id = 1 "
                       "ORDER BY created_at").fetchall()
        raw.commit()
        return [tuple(r) for r in rows]

    raw.run("INSERT INTO customers (id, name, tier, status, revision_note) "
            "VALUES (1, 'a', 'basic', 'active', 'x')")
    raw.commit()
    raw.run("ALTER TABLE customers ADD COLUMN note text")
    raw.run("UPDATE customers SET note = 'kept' WHERE id = 1")
    raw.commit()
    raw.run("UPDATE customers SET name = 'a2' WHERE id = 1")  # the copy carries the new column
    raw.commit()
    with pg_engine.begin() as conn:
        assert not triggers.up_to_date(conn, "customers")
    assert seen("note") == [("a", None), ("a", "kept"), ("a2", "kept")]
    catalog.upgrade(pg_engine)
    with pg_engine.begin() as conn:
        assert triggers.up_to_date(conn, "customers")
    raw.run("UPDATE customers SET name = 'a3' WHERE id = 1")
    raw.commit()
    assert seen("note")[-2:] == [("a2", "kept"), ("a3", "kept")]
    # A dropped column, or one added after another was dropped, stops raw updates loudly.
    for changes in (["DROP COLUMN note"],
                    ["ADD COLUMN gone int", "DROP COLUMN gone", "ADD COLUMN later text"]):
        for change in changes:
            raw.run(f"ALTER TABLE customers {change}")
            raw.commit()
        with pytest.raises(psycopg.errors.DatabaseError):
            raw.run("UPDATE customers SET name = 'a4' WHERE id = 1")
        raw.rollback()
        catalog.upgrade(pg_engine)
    raw.run("UPDATE customers SET later = 'l' WHERE id = 1")
    raw.commit()
    raw.run("UPDATE customers SET name = 'a4' WHERE id = 1")
    raw.commit()
    assert seen("later")[-3:] == [("a3", None), ("a3", "l"), ("a4", "l")]
    raw.close()


@pytest.mark.postgres
def test_postgresql_identity_keys_and_generated_columns_are_versioned(
        pg_engine: Engine) -> None:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    md = sa.MetaData()
    sa.Table("parts", md, sa.Column("id", sa.Integer, sa.Identity(always=True), primary_key=True),
             sa.Column("qty", sa.Integer, nullable=False),
             sa.Column("doubled", sa.Integer, sa.Computed("qty * 2", persisted=True)))
    md.create_all(pg_engine)
    with pg_engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).make_temporal("parts")
    raw = Raw(pg_engine.url)
    raw.run("INSERT INTO parts (qty) VALUES (1)")
    raw.commit()
    raw.run("UPDATE parts SET qty = 5")
    raw.commit()
    raw.run("DELETE FROM parts")
    raw.commit()
    rows = raw.run("SELECT id, qty, doubled, expired_at IS NULL FROM parts "
                   "ORDER BY created_at").fetchall()
    raw.close()
    assert [tuple(r) for r in rows] == [(1, 1, 2, False), (1, 5, 10, False)]


@pytest.mark.postgres
def test_postgresql_truncate_of_history_is_refused(pg_engine: Engine) -> None:
    """TRUNCATE fires no row trigger: it would erase history, so it is refused, for the
    table and its archive; a plain table beside them truncates as ever."""
    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s, s.begin():
        s.add(Customer(id=1, name="a"))
    with Session(pg_engine) as s, s.begin():
        s.get(Customer, 1).name = "b"
    archive(pg_engine, ttl=timedelta(microseconds=1), tables=["customers"])
    raw = Raw(pg_engine.url)
    raw.run("CREATE TABLE scratch (x int)")
    raw.run("INSERT INTO scratch VALUES (1)")
    raw.commit()
    for statement in ("TRUNCATE customers", "TRUNCATE customers_archive",
                      "TRUNCATE ONLY customers", "TRUNCATE customers, scratch CASCADE"):
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation,
                           match="TRUNCATE would erase history"):
            raw.run(statement)
        raw.rollback()
    raw.run("TRUNCATE scratch")
    raw.commit()
    raw.close()
    with pg_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM customers").scalar() == 2
        assert conn.exec_driver_sql("SELECT count(*) FROM ONLY customers_archive").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM scratch").scalar() == 0

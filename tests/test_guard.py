"""The database's own guard: no two versions of one key valid at once, on every writer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy import URL, Engine, insert, text
from sqlalchemy.orm import Session

from temporal import ConflictError, catalog, guard, transaction_time, triggers
from tests.models import Base, Customer, Line

NOW = datetime.now(timezone.utc)


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Customer(id=1, name="a"), Customer(id=2, name="b"),
                   Line(order_no="o1", line_no=1, sku="x", qty=1)])
    yield engine


def _stamp(engine: Engine, moment: datetime) -> str:
    """A literal for raw SQL in the column's storage format."""
    if engine.dialect.name == "postgresql":
        return f"'{moment.isoformat()}'::timestamptz"
    return "'" + moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"


def _raw_insert(engine: Engine, cid: int, start: datetime, end: datetime | None) -> None:
    finish = "NULL" if end is None else _stamp(engine, end)
    # Forged history: past the versioning triggers (which refuse period columns) to the guard.
    with engine.begin() as conn, triggers.maintenance(conn):
        conn.exec_driver_sql(
            "INSERT INTO customers (id, name, tier, status, revision_note, created_at, "
            f"expired_at) VALUES ({cid}, 'raw', 'basic', 'active', 'x', "
            f"{_stamp(engine, start)}, {finish})")


def _versions(engine: Engine, cid: int) -> list[tuple[datetime, datetime | None]]:
    table = Customer.__table__
    with engine.connect() as conn:
        return [(r.created_at, r.expired_at) for r in conn.execute(
            sa.select(table.c.created_at, table.c.expired_at)
            .where(table.c.id == cid).order_by(table.c.created_at))]


def test_every_temporal_table_gets_its_guard_and_plain_tables_none(db: Engine) -> None:
    with db.connect() as conn:
        assert all(guard.installed(conn, t) for t in ("customers", "orders", "lines"))
        assert not guard.installed(conn, "regions")


@pytest.mark.parametrize("end", ["open", "closed"])
def test_the_database_refuses_an_overlapping_version_from_any_writer(db: Engine,
                                                                     end: str) -> None:
    with Session(db) as s, s.begin():  # history [start, t1): no current row left to collide
        s.delete(s.get(Customer, 1))
    (start, _), = before = _versions(db, 1)
    with pytest.raises(sa.exc.IntegrityError):  # raw SQL, as psql or another service would
        _raw_insert(db, 1, start + timedelta(microseconds=1),
                    None if end == "open" else start + timedelta(microseconds=2))
    assert _versions(db, 1) == before  # nothing was written


def test_the_database_refuses_a_negative_period_and_reopening_an_expired_version(
        db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.get(Customer, 1).name = "a2"
    old_start = _versions(db, 1)[0][0]
    with pytest.raises(sa.exc.IntegrityError), db.begin() as conn, triggers.maintenance(conn):
        conn.execute(text("UPDATE customers SET expired_at = NULL WHERE id = 1 AND "
                          "expired_at IS NOT NULL"))
    moment = NOW - timedelta(days=400)
    with pytest.raises(sa.exc.IntegrityError):
        _raw_insert(db, 9, moment, moment - timedelta(seconds=1))
    assert _versions(db, 1)[0][0] == old_start and len(_versions(db, 9)) == 0
    # Back-to-back periods are not an overlap (half-open [created_at, expired_at)).
    _raw_insert(db, 9, moment, moment + timedelta(seconds=1))
    _raw_insert(db, 9, moment + timedelta(seconds=1), None)
    assert len(_versions(db, 9)) == 2


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["orm", "bulk insert"])
def test_an_older_stamp_re_inserting_a_key_a_younger_one_deleted_is_a_conflict(
        pg_engine: Engine, how: str) -> None:
    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s, s.begin():
        s.add_all([Customer(id=1, name="a"), Customer(id=2, name="b")])
    older = Session(pg_engine)
    older.get(Customer, 2).name = "b2"
    older.flush()  # stamped first
    with Session(pg_engine) as younger, younger.begin():
        younger.delete(younger.get(Customer, 1))
        assert transaction_time(younger) > transaction_time(older)
    with pytest.raises(ConflictError, match="younger timestamp"):
        if how == "orm":
            older.add(Customer(id=1, name="again"))
            older.flush()
        else:
            older.execute(insert(Customer), [{"id": 1, "name": "again"}])
    older.rollback()
    older.close()
    (start, end), = _versions(pg_engine, 1)  # one version, expired by the younger delete
    assert end is not None and start < end


@pytest.mark.postgres
def test_a_younger_stamp_re_inserting_after_an_older_delete_is_fine(pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s, s.begin():
        s.add(Customer(id=1, name="a"))
    with Session(pg_engine) as s, s.begin():
        s.delete(s.get(Customer, 1))
    with Session(pg_engine) as s, s.begin():
        s.add(Customer(id=1, name="back"))
    (_, end), (start, again) = _versions(pg_engine, 1)
    assert end < start and again is None  # the gap shows


def _unguard(engine: Engine, table: str = "customers") -> None:
    with engine.begin() as conn:
        guard.remove(conn, table)
        assert not guard.installed(conn, table)


def test_db_upgrade_guards_tables_that_have_no_guard(db: Engine) -> None:
    _unguard(db)
    catalog.upgrade(db)
    with db.connect() as conn:
        assert guard.installed(conn, "customers")
    (start, _), = _versions(db, 1)
    with pytest.raises(sa.exc.IntegrityError):  # ends inside the current version
        _raw_insert(db, 1, start - timedelta(days=1), start + timedelta(seconds=1))


def test_db_upgrade_reports_overlaps_already_in_history_and_changes_nothing(
        db: Engine, url: URL) -> None:
    _unguard(db)
    start = NOW - timedelta(days=10)
    _raw_insert(db, 7, start, start + timedelta(days=2))
    _raw_insert(db, 7, start + timedelta(days=1), None)  # overlaps the first by a day
    with db.connect() as conn:
        found = guard.overlaps(conn, "customers", ["id"])
    assert [o.key for o in found] == [(7,)]
    with pytest.raises(guard.OverlapError, match=r"customers 7: version \[.*\) is still valid"):
        catalog.upgrade(db)
    with db.connect() as conn:
        assert not guard.installed(conn, "customers")  # nothing was changed
    db.dispose()
    address = url.render_as_string(hide_password=False)
    done = subprocess.run([sys.executable, "-m", "temporal", "db", "upgrade", "--url", address],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "customers 7" in done.stderr and "temporal db upgrade" in done.stderr


def test_catalog_downgrade_below_the_guards_removes_them_and_upgrade_brings_them_back(
        db: Engine) -> None:
    catalog.downgrade(db, "0002")
    with db.connect() as conn:
        assert not guard.installed(conn, "customers")
    catalog.upgrade(db)
    with db.connect() as conn:
        assert guard.installed(conn, "customers") and guard.installed(conn, "lines")


def _downgrade_to_guard_1(engine: Engine) -> None:
    """Make the guard look like version 1's: no version mark (and on PostgreSQL its
    statement-level update trigger, which probed every updated row)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("COMMENT ON FUNCTION customers_no_overlap() IS NULL")
            conn.exec_driver_sql("DROP TRIGGER customers_no_overlap_update ON customers")
            conn.exec_driver_sql("DROP FUNCTION customers_no_overlap_update()")
            conn.exec_driver_sql(
                "CREATE TRIGGER customers_no_overlap_update AFTER UPDATE ON customers "
                "REFERENCING NEW TABLE AS temporal_written FOR EACH STATEMENT "
                "EXECUTE FUNCTION customers_no_overlap()")
        else:
            sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                                       "AND name = 'customers_no_overlap_update'").scalar_one()
            conn.exec_driver_sql("DROP TRIGGER customers_no_overlap_update")
            conn.exec_driver_sql(sql.replace(f"/* {guard.VERSION} */", ""))
        assert guard.installed(conn, "customers") and not guard.up_to_date(conn, "customers")


def test_db_upgrade_replaces_an_older_guard(db: Engine) -> None:
    _downgrade_to_guard_1(db)
    catalog.upgrade(db)
    with db.connect() as conn:
        assert guard.up_to_date(conn, "customers") and guard.up_to_date(conn, "lines")
        if db.dialect.name == "postgresql":  # the update trigger is row-level again
            assert conn.exec_driver_sql(
                "SELECT tgtype & 1 = 1 AND tgqual IS NOT NULL FROM pg_trigger "
                "WHERE tgname = 'customers_no_overlap_update'").scalar_one()
    (start, _), = _versions(db, 1)
    with pytest.raises(sa.exc.IntegrityError):  # and it guards as before
        _raw_insert(db, 1, start - timedelta(days=1), start + timedelta(seconds=1))
    catalog.upgrade(db)  # up to date: nothing to replace
    with db.connect() as conn:
        assert guard.up_to_date(conn, "customers")


def test_an_update_that_moves_a_period_earlier_into_another_version_is_refused(
        db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.get(Customer, 1).name = "a2"
    (first, ended), (second, _) = _versions(db, 1)
    with pytest.raises(sa.exc.IntegrityError), db.begin() as conn, triggers.maintenance(conn):
        conn.execute(text("UPDATE customers SET created_at = :moment WHERE id = 1 "
                          "AND expired_at IS NULL"),
                     {"moment": first + (ended - first) / 2})
    assert _versions(db, 1)[1][0] == second
    # Shortening it from the other end is fine (nothing can overlap a shorter period).
    with db.begin() as conn, triggers.maintenance(conn):
        conn.execute(text("UPDATE customers SET created_at = :moment WHERE id = 1 "
                          "AND expired_at IS NULL"), {"moment": second + timedelta(seconds=1)})
    assert _versions(db, 1)[1][0] == second + timedelta(seconds=1)


@pytest.mark.postgres
def test_an_expire_is_not_probed_but_a_period_that_grows_or_changes_key_is(
        pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s, s.begin():
        s.add_all([Customer(id=1, name="a"), Customer(id=2, name="b")])
    (start, _), = _versions(pg_engine, 1)
    with pg_engine.begin() as conn:  # forged corrupt history the insert probe would refuse
        conn.exec_driver_sql("ALTER TABLE customers DISABLE TRIGGER customers_no_overlap_insert")
        _forge = (f"INSERT INTO customers (id, name, tier, status, revision_note, created_at, "
                  f"expired_at) VALUES (1, 'raw', 'basic', 'active', 'x', "
                  f"{_stamp(pg_engine, start - timedelta(days=1))}, "
                  f"{_stamp(pg_engine, start + timedelta(days=1))})")
        with triggers.maintenance(conn):
            conn.exec_driver_sql(_forge)
        conn.exec_driver_sql("ALTER TABLE customers ENABLE TRIGGER customers_no_overlap_insert")
    with Session(pg_engine) as s, s.begin():  # expiring only shortens: no probe
        s.delete(s.get(Customer, 1))
    with pytest.raises(sa.exc.IntegrityError, match="two versions of one key"), \
            pg_engine.begin() as conn, triggers.maintenance(conn):  # growing is probed
        conn.exec_driver_sql("UPDATE customers SET expired_at = NULL WHERE id = 1 "
                             "AND name = 'a'")
    with pytest.raises(sa.exc.IntegrityError, match="two versions of one key"), \
            pg_engine.begin() as conn, triggers.maintenance(conn):  # so is a new key
        conn.exec_driver_sql("UPDATE customers SET id = 2 WHERE id = 1 AND name = 'raw'")

"""Write semantics through the ORM unit of work, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, exc, select
from sqlalchemy.orm import Session

from temporal import (
    ConflictError,
    ReadOnlyError,
    UnsupportedError,
    as_of,
    history,
    transaction_time,
)
from tests.models import Base, Customer, Line, Order, Region


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    yield engine


def physical(engine: Engine, model: Any) -> list[Any]:
    """Every stored row of the model's table, bypassing the ORM."""
    table = model.__table__
    with engine.connect() as conn:
        return list(conn.execute(select(table).order_by(*table.primary_key.columns)))


def add_customer(engine: Engine, **values: Any) -> int:
    with Session(engine) as s, s.begin():
        c = Customer(**{"name": "Ada", **values})
        s.add(c)
        s.flush()
        return c.id


def test_insert_writes_one_current_version_stamped_with_the_transaction_time(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add(Customer(name="Ada"))
        stamp = transaction_time(s)
    (row,) = physical(db, Customer)
    assert row.created_at == stamp
    assert row.created_at.utcoffset() == timedelta(0)
    assert row.expired_at is None


def test_update_later_expires_the_old_version_and_periods_are_contiguous(db: Engine) -> None:
    cid = add_customer(db, tier="basic")
    with Session(db) as s, s.begin():
        s.get(Customer, cid).tier = "gold"
        stamp = transaction_time(s)
    old, new = physical(db, Customer)
    assert (old.tier, new.tier) == ("basic", "gold")
    assert old.expired_at == new.created_at == stamp
    assert new.expired_at is None
    assert old.created_at < old.expired_at


def test_unchanged_and_unloaded_columns_carry_over(db: Engine) -> None:
    cid = add_customer(db, email="ada@example.com", score=0.1 + 0.2)
    with Session(db) as s, s.begin():
        c = s.get(Customer, cid)
        s.expire(c)  # nothing loaded: the new version must still get every column
        c.tier = "gold"
    old, new = physical(db, Customer)
    for column in ("name", "email", "score", "status", "region_id"):
        assert getattr(new, column) == getattr(old, column)
    assert new.score == 0.1 + 0.2


def test_an_update_that_changes_nothing_writes_nothing(db: Engine) -> None:
    cid = add_customer(db, tier="basic")
    with Session(db) as s, s.begin():
        c = s.get(Customer, cid)
        c.tier = "basic"
    with Session(db) as s, s.begin():
        c = s.get(Customer, cid)
        s.expire(c)
        c.tier = "basic"  # old value unknown to the ORM; the database row says equal
    assert len(physical(db, Customer)) == 1


def test_two_updates_in_one_transaction_leave_one_new_version(db: Engine) -> None:
    cid = add_customer(db, tier="basic")
    with Session(db) as s, s.begin():
        c = s.get(Customer, cid)
        c.tier = "silver"
        s.flush()
        c.tier = "gold"
        s.flush()
        c.name = "Ada L."
    rows = physical(db, Customer)
    assert [(r.tier, r.name) for r in rows] == [("basic", "Ada"), ("gold", "Ada L.")]
    assert rows[0].expired_at == rows[1].created_at


def test_insert_then_update_in_one_transaction_leaves_one_row(db: Engine) -> None:
    with Session(db) as s, s.begin():
        c = Customer(name="Ada", tier="basic")
        s.add(c)
        s.flush()
        c.tier = "gold"
    (row,) = physical(db, Customer)
    assert row.tier == "gold" and row.expired_at is None


def test_insert_then_delete_in_one_transaction_leaves_nothing(db: Engine) -> None:
    with Session(db) as s, s.begin():
        c = Customer(name="Ada")
        s.add(c)
        s.flush()
        s.delete(c)
    assert physical(db, Customer) == []


def test_update_then_delete_in_one_transaction_keeps_the_values_from_before(db: Engine) -> None:
    cid = add_customer(db, tier="basic")
    with Session(db) as s, s.begin():
        c = s.get(Customer, cid)
        c.tier = "gold"
        s.flush()
        s.delete(c)
        stamp = transaction_time(s)
    (row,) = physical(db, Customer)
    assert row.tier == "basic"
    assert row.expired_at == stamp


def test_a_whole_lifecycle_in_one_transaction_leaves_nothing(db: Engine) -> None:
    with Session(db) as s, s.begin():
        c = Customer(name="Ada")
        s.add(c)
        s.flush()
        c.tier = "gold"
        s.flush()
        c.name = "Ada L."
        s.flush()
        s.delete(c)
    assert physical(db, Customer) == []


def test_rollback_leaves_nothing(db: Engine) -> None:
    cid = add_customer(db)
    before = physical(db, Customer)
    with Session(db) as s:
        s.get(Customer, cid).tier = "gold"
        s.add(Customer(name="Bob"))
        s.flush()
        s.rollback()
    assert physical(db, Customer) == before


def test_a_rolled_back_savepoint_leaves_no_trace(db: Engine) -> None:
    cid = add_customer(db, tier="basic")
    with Session(db) as s, s.begin():
        c = s.get(Customer, cid)
        c.name = "Ada L."
        s.flush()
        nested = s.begin_nested()
        c.tier = "gold"
        s.add(Customer(name="Bob"))
        s.flush()
        nested.rollback()
        # After the savepoint, the transaction's own version is still changed in place.
        s.get(Customer, cid).score = 1.5
    rows = physical(db, Customer)
    assert [(r.name, r.tier, r.score) for r in rows] == [
        ("Ada", "basic", None), ("Ada L.", "basic", 1.5)]


def test_versions_written_inside_a_released_savepoint_are_this_transactions_own(
    db: Engine,
) -> None:
    cid = add_customer(db, tier="basic")
    with Session(db) as s, s.begin():
        with s.begin_nested():
            s.get(Customer, cid).tier = "silver"
        s.get(Customer, cid).tier = "gold"
    assert [r.tier for r in physical(db, Customer)] == ["basic", "gold"]


def test_delete_expires_and_reinsert_starts_a_new_version_after_a_gap(db: Engine) -> None:
    cid = add_customer(db, tier="basic")
    with Session(db) as s, s.begin():
        s.delete(s.get(Customer, cid))
        deleted_at = transaction_time(s)
    with Session(db) as s, s.begin():
        assert s.get(Customer, cid) is None
        s.add(Customer(id=cid, name="Ada", tier="gold"))
        reinserted_at = transaction_time(s)
    first, second = physical(db, Customer)
    assert first.expired_at == deleted_at < reinserted_at == second.created_at
    with Session(db) as s:
        periods = [(v.created_at, v.expired_at) for v in history(s, Customer, cid)]
    assert periods == [(first.created_at, deleted_at), (reinserted_at, None)]


def test_one_transaction_stamps_every_key_with_the_same_time(db: Engine) -> None:
    a, b = add_customer(db, name="A"), add_customer(db, name="B")
    with Session(db) as s, s.begin():
        s.get(Customer, a).tier = "gold"
        s.add(Customer(name="C"))
        s.flush()
        s.delete(s.get(Customer, b))
        s.add(Line(order_no="X1", line_no=1, sku="S", qty=1))
        stamp = transaction_time(s)
    stamps = {r.created_at for r in physical(db, Customer) if r.expired_at is None}
    stamps |= {r.expired_at for r in physical(db, Customer) if r.expired_at is not None}
    stamps |= {r.created_at for r in physical(db, Line)}
    assert stamps - {r.created_at for r in physical(db, Customer)
                     if r.name in ("A", "B") and r.expired_at is not None} == {stamp}


def test_timestamps_increase_from_one_transaction_to_the_next(db: Engine) -> None:
    cid = add_customer(db)
    stamps = []
    for tier in ("a", "b", "c", "d"):
        with Session(db) as s, s.begin():
            s.get(Customer, cid).tier = tier
            stamps.append(transaction_time(s))
    assert stamps == sorted(stamps) and len(set(stamps)) == 4


def test_the_database_refuses_a_second_current_row_for_a_key(db: Engine) -> None:
    cid = add_customer(db)
    with pytest.raises(exc.IntegrityError), Session(db) as s, s.begin():
        s.add(Customer(id=cid, name="Twin"))


def test_unique_columns_are_unique_among_current_rows_only(db: Engine) -> None:
    cid = add_customer(db, email="ada@example.com")
    with Session(db) as s, s.begin():
        s.get(Customer, cid).tier = "gold"  # history now holds the email twice
    with pytest.raises(exc.IntegrityError), Session(db) as s, s.begin():
        s.add(Customer(name="Other", email="ada@example.com"))


def test_composite_keys(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Line(order_no="A", line_no=1, sku="x", qty=1),
                   Line(order_no="A", line_no=2, sku="y", qty=1)])
    with Session(db) as s, s.begin():
        s.get(Line, ("A", 2)).qty = 5
    with Session(db) as s, s.begin():
        s.delete(s.get(Line, ("A", 1)))
    with Session(db) as s:
        assert [(x.order_no, x.line_no, x.qty) for x in s.scalars(select(Line))] == [("A", 2, 5)]
        assert [v.qty for v in history(s, Line, ("A", 2))] == [1, 5]
        assert [v.qty for v in history(s, Line, {"order_no": "A", "line_no": 1})] == [1]


def test_defaults_server_defaults_and_onupdate(db: Engine) -> None:
    cid = add_customer(db)
    with Session(db) as s, s.begin():
        c = s.get(Customer, cid)
        assert (c.tier, c.status, c.revision_note) == ("basic", "active", "created")
        c.name = "Ada L."
    with Session(db) as s:
        c = s.get(Customer, cid)
        assert (c.tier, c.status, c.revision_note) == ("basic", "active", "edited")
    old, _new = physical(db, Customer)
    assert old.revision_note == "created"


def test_new_ids_are_generated_and_never_reused_after_delete(db: Engine) -> None:
    first = add_customer(db, name="A")
    with Session(db) as s, s.begin():
        s.delete(s.get(Customer, first))
    second = add_customer(db, name="B")
    assert second > first


def test_relationship_changes_are_versioned(db: Engine) -> None:
    with Session(db) as s, s.begin():
        north, south = Region(name="north"), Region(name="south")
        c = Customer(name="Ada", region=north)
        s.add_all([north, south, c])
    with Session(db) as s, s.begin():
        c = s.scalars(select(Customer)).one()
        c.region = s.scalars(select(Region).where(Region.name == "south")).one()
    with Session(db) as s, s.begin():
        c = s.scalars(select(Customer)).one()
        c.region = Region(name="west")  # the id of west exists only during the flush
        cid = c.id
    names = []
    with Session(db) as s:
        for v in history(s, Customer, cid):
            names.append(s.get(Region, v.region_id).name)
    assert names == ["north", "south", "west"]


def test_collections_and_delete_orphan_expire_children(db: Engine) -> None:
    with Session(db) as s, s.begin():
        c = Customer(name="Ada", orders=[Order(amount=10), Order(amount=20)])
        s.add(c)
    with Session(db) as s, s.begin():
        c = s.scalars(select(Customer)).one()
        c.orders[0].amount = 11
        del c.orders[1]  # delete-orphan: must expire, never DELETE
    rows = physical(db, Order)
    assert [(r.amount, r.expired_at is None) for r in rows] == [
        (10, False), (11, True), (20, False)]
    with Session(db) as s, s.begin():
        s.delete(s.scalars(select(Customer)).one())  # cascades to the remaining order
    assert all(r.expired_at is not None for r in physical(db, Order))
    assert all(r.expired_at is not None for r in physical(db, Customer))


def test_changing_the_key_or_the_period_columns_is_refused(db: Engine) -> None:
    cid = add_customer(db)
    with pytest.raises(UnsupportedError, match="key names the entity"), Session(db) as s:
        s.get(Customer, cid).id = cid + 100
        s.flush()
    with pytest.raises(UnsupportedError, match="period columns"), Session(db) as s:
        s.get(Customer, cid).expired_at = datetime.now(timezone.utc)
        s.flush()
    with pytest.raises(UnsupportedError, match="period columns"), Session(db) as s:
        s.get(Customer, cid).created_at = s.get(Customer, cid).created_at + timedelta(days=1)
        s.flush()
    # An older created_at claims the values were read from an older version (what a
    # merged stale object carries): a conflict with the version that replaced it.
    with pytest.raises(ConflictError, match="re-read it and retry"), Session(db) as s:
        s.get(Customer, cid).created_at = s.get(Customer, cid).created_at - timedelta(days=1)
        s.flush()
    assert len(physical(db, Customer)) == 1


def test_objects_read_as_of_the_past_are_read_only(db: Engine) -> None:
    cid = add_customer(db, tier="basic")
    with Session(db) as s, s.begin():
        t = s.get(Customer, cid).created_at
        s.get(Customer, cid).tier = "gold"
    with Session(db) as s:
        old = s.get(Customer, cid, options=[as_of(t)])
        old.tier = "platinum"
        with pytest.raises(ReadOnlyError, match="read as of"):
            s.flush()
        s.rollback()
        old = s.get(Customer, cid, options=[as_of(t)])
        s.delete(old)
        with pytest.raises(ReadOnlyError):
            s.flush()
    assert [r.tier for r in physical(db, Customer)] == ["basic", "gold"]

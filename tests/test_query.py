"""Reads: current by default, as_of(t) everywhere, history and SQL:2011 periods."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from temporal import InvalidTimeError, as_of, history, transaction_time, versions
from tests.models import Base, Customer, Order


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    yield engine


@dataclass
class Timeline:
    """One customer written at three moments: inserted t1, updated t2, deleted t3."""

    id: int
    t1: datetime
    t2: datetime
    t3: datetime


@pytest.fixture
def timeline(db: Engine) -> Timeline:
    with Session(db) as s, s.begin():
        c = Customer(name="Ada", tier="basic")
        s.add(c)
        s.flush()
        cid, t1 = c.id, transaction_time(s)
    with Session(db) as s, s.begin():
        s.get(Customer, cid).tier = "gold"
        t2 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.delete(s.get(Customer, cid))
        t3 = transaction_time(s)
    return Timeline(cid, t1, t2, t3)


def tier_at(engine: Engine, cid: int, at: datetime) -> str | None:
    with Session(engine) as s:
        c = s.get(Customer, cid, options=[as_of(at)])
        return None if c is None else c.tier


def test_periods_are_half_open_at_every_boundary(db: Engine, timeline: Timeline) -> None:
    tick = timedelta(microseconds=1)
    t = timeline
    assert tier_at(db, t.id, t.t1 - tick) is None  # before the first version
    assert tier_at(db, t.id, t.t1) == "basic"  # a period includes its start
    assert tier_at(db, t.id, t.t1 + (t.t2 - t.t1) / 2) == "basic"
    assert tier_at(db, t.id, t.t2 - tick) == "basic"
    assert tier_at(db, t.id, t.t2) == "gold"  # ... and excludes its end
    assert tier_at(db, t.id, t.t3 - tick) == "gold"
    assert tier_at(db, t.id, t.t3) is None  # after deletion
    assert tier_at(db, t.id, t.t3 + timedelta(days=365)) is None


def test_current_reads_see_only_current_rows(db: Engine, timeline: Timeline) -> None:
    with Session(db) as s, s.begin():
        s.add(Customer(name="Bob"))
    with Session(db) as s:
        assert s.scalars(select(Customer.name)).all() == ["Bob"]
        assert s.scalar(select(func.count()).select_from(Customer)) == 1
        assert s.get(Customer, timeline.id) is None


def test_as_of_select_sees_the_table_at_that_moment(db: Engine, timeline: Timeline) -> None:
    with Session(db) as s, s.begin():
        s.add(Customer(name="Bob"))
    with Session(db) as s:
        rows = s.scalars(select(Customer).options(as_of(timeline.t2))).all()
        assert [(c.name, c.tier) for c in rows] == [("Ada", "gold")]
        names = s.scalars(select(Customer.name).options(as_of(timeline.t1))).all()
        assert names == ["Ada"]


def test_current_and_as_of_objects_never_mix_in_one_session(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add(Customer(id=1, name="Ada", tier="basic"))
        t1 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.get(Customer, 1).tier = "gold"
    with Session(db) as s:
        now = s.get(Customer, 1)
        then = s.get(Customer, 1, options=[as_of(t1)])
        assert (now.tier, then.tier) == ("gold", "basic")
        assert now is not then
        assert s.get(Customer, 1) is now
        assert s.get(Customer, 1, options=[as_of(t1)]) is then
        listed = s.scalars(select(Customer).options(as_of(t1))).one()
        assert listed is then and listed.tier == "basic"
        assert s.scalars(select(Customer)).one() is now
        s.expire_all()  # refreshes go back to each object's own moment
        assert (now.tier, then.tier) == ("gold", "basic")


@pytest.fixture
def shop(db: Engine) -> dict[str, datetime]:
    """A customer and orders changing over three transactions."""
    with Session(db) as s, s.begin():
        s.add(Customer(id=1, name="Ada", orders=[Order(id=10, amount=5), Order(id=11, amount=7)]))
        t1 = transaction_time(s)
    with Session(db) as s, s.begin():
        c = s.get(Customer, 1)
        c.name = "Ada L."
        c.orders[0].amount = 50
        c.orders.append(Order(id=12, amount=9))
        t2 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.delete(s.get(Order, 11))
        t3 = transaction_time(s)
    return {"t1": t1, "t2": t2, "t3": t3}


@pytest.mark.parametrize("loader", ["lazy", "joined", "selectin"])
def test_relationship_loads_follow_the_statements_moment(
    db: Engine, shop: dict[str, datetime], loader: str
) -> None:
    load = {"lazy": [], "joined": [joinedload(Customer.orders)],
            "selectin": [selectinload(Customer.orders)]}[loader]
    with Session(db) as s:
        old = s.scalars(select(Customer).options(as_of(shop["t1"]), *load)).unique().one()
        assert old.name == "Ada"
        assert [(o.id, o.amount) for o in old.orders] == [(10, 5), (11, 7)]
        mid = s.scalars(select(Customer).options(as_of(shop["t2"]), *load)).unique().one()
        assert [(o.id, o.amount) for o in mid.orders] == [(10, 50), (11, 7), (12, 9)]
        now = s.scalars(select(Customer).options(*load)).unique().one()
        assert now.name == "Ada L."
        assert [(o.id, o.amount) for o in now.orders] == [(10, 50), (12, 9)]


def test_many_to_one_from_the_past_stays_in_the_past(db: Engine, shop: dict[str, datetime]) -> None:
    with Session(db) as s:
        current_customer = s.get(Customer, 1)  # sits in the identity map under the key 1
        old_order = s.get(Order, 10, options=[as_of(shop["t1"])])
        assert old_order.amount == 5
        assert old_order.customer is not current_customer
        assert old_order.customer.name == "Ada"
        assert s.get(Order, 11, options=[as_of(shop["t3"])]) is None
        assert s.get(Order, 11, options=[as_of(shop["t2"])]).customer.name == "Ada L."


def test_naive_datetimes_are_refused_with_a_clear_message(db: Engine) -> None:
    with pytest.raises(InvalidTimeError, match="naive"):
        as_of(datetime(2026, 1, 1))
    with pytest.raises(InvalidTimeError, match="naive"):
        versions(Customer, from_to=(datetime(2026, 1, 1), datetime(2026, 2, 1)))


def test_history_lists_every_version_oldest_first(db: Engine, timeline: Timeline) -> None:
    with Session(db) as s:
        rows = history(s, Customer, timeline.id)
    assert [(r.tier, r.created_at, r.expired_at) for r in rows] == [
        ("basic", timeline.t1, timeline.t2), ("gold", timeline.t2, timeline.t3)]
    assert rows[0].name == "Ada"
    with Session(db) as s:
        assert history(s, Customer, 999) == []


def test_sql2011_period_forms(db: Engine, timeline: Timeline) -> None:
    t = timeline
    tick = timedelta(microseconds=1)

    def tiers(**period: tuple[datetime, datetime]) -> list[str]:
        with Session(db) as s:
            return [r.tier for r in s.execute(versions(Customer, **period))]

    assert tiers() == ["basic", "gold"]
    # FROM a TO b: overlaps [a, b); b is excluded, so a range ending at t2 misses "gold".
    assert tiers(from_to=(t.t1, t.t2)) == ["basic"]
    assert tiers(from_to=(t.t2, t.t2 + tick)) == ["gold"]
    assert tiers(from_to=(t.t1 - timedelta(days=1), t.t1)) == []
    # BETWEEN a AND b: b included.
    assert tiers(between=(t.t1, t.t2)) == ["basic", "gold"]
    assert tiers(between=(t.t3, t.t3 + timedelta(days=1))) == []
    # CONTAINED IN (a, b): begins and ends inside.
    assert tiers(contained_in=(t.t1, t.t2)) == ["basic"]
    assert tiers(contained_in=(t.t1, t.t3)) == ["basic", "gold"]
    assert tiers(contained_in=(t.t1 + tick, t.t3)) == ["gold"]
    # A reversed range is empty, whatever the form.
    for form in ("from_to", "between", "contained_in"):
        assert tiers(**{form: (t.t3, t.t1)}) == []


def test_versions_can_be_filtered_like_any_select(db: Engine, timeline: Timeline) -> None:
    with Session(db) as s:
        rows = s.execute(versions(Customer).where(Customer.tier == "gold")).all()
    assert [(r.id, r.tier) for r in rows] == [(timeline.id, "gold")]

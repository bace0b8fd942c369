"""Plain statements step past temporal's listeners; anything that reaches a temporal
table still reads current rows only; the library's own SQLite statements skip the
raw writers' triggers without leaving that mark behind."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, String, event, select, text
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    column_property,
    foreign,
    joinedload,
    mapped_column,
    relationship,
)

from temporal import ConflictError, history, reach
from temporal._backend import LIBRARY_MARK, MAINTENANCE_MARK
from tests.models import Base, Customer, Order, Region


class Own(DeclarativeBase):
    """Plain models of their own, so the shared models' schema stays as it is."""


class Shop(Own):
    """A plain model whose relationships and expressions lead to temporal tables."""

    __tablename__ = "shops"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    customer_id: Mapped[int | None]
    # joined inline into every SELECT of shops
    best: Mapped[Customer | None] = relationship(
        Customer, primaryjoin=lambda: foreign(Shop.customer_id) == Customer.id,
        lazy="joined", viewonly=True)


class Tally(Own):
    """A plain model with a column that is a subquery over a temporal table."""

    __tablename__ = "tallies"
    id: Mapped[int] = mapped_column(primary_key=True)
    customers: Mapped[int] = column_property(
        select(sa.func.count(Customer.id)).scalar_subquery())


def test_plain_statements_are_told_apart_from_temporal_ones() -> None:
    assert not reach.statement_may_read_temporal(select(Region))
    assert not reach.statement_may_read_temporal(select(Region).where(Region.id == 3))
    assert reach.statement_may_read_temporal(select(Customer))
    assert reach.statement_may_read_temporal(
        select(Region).where(Region.id.in_(select(Customer.region_id))))
    assert reach.statement_may_read_temporal(
        select(Region).where(sa.exists().where(Order.customer_id == Region.id)))
    assert reach.statement_may_read_temporal(select(Customer).options(joinedload(
        Customer.region)))
    assert reach.statement_may_read_temporal(select(Shop))  # its joined relationship
    assert reach.statement_may_read_temporal(select(Tally))  # its column subquery
    assert reach.statement_may_read_temporal(select(Customer.__table__))
    assert not reach.mapper_reaches_temporal(sa.inspect(Region))
    assert reach.mapper_reaches_temporal(sa.inspect(Shop))


def test_a_plain_select_reaches_the_database_unchanged(engine: Engine) -> None:
    """No current-row criterion is added to a statement that reads no temporal entity."""
    seen: list[Any] = []
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Region(id=1, name="north"))
        s.commit()
        event.listen(s, "do_orm_execute", lambda state: seen.append(state.statement))
        statement = select(Region).where(Region.id == 1)
        assert s.scalars(statement).one().name == "north"
    assert seen and seen[0] is statement  # the hook did not rebuild it


def _customers(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    Own.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Region(id=1, name="north"))
        s.add_all([Customer(id=1, name="a", region_id=1), Customer(id=2, name="b")])
        s.commit()
    with Session(engine) as s:
        s.get(Customer, 1).name = "a2"  # type: ignore[union-attr]
        s.commit()


def test_temporal_entities_inside_plain_statements_are_read_as_of_now(engine: Engine) -> None:
    _customers(engine)
    with Session(engine) as s:
        regions = s.scalars(select(Region).where(
            Region.id.in_(select(Customer.region_id).where(Customer.name == "a")))).all()
        assert regions == []  # "a" is history now
        regions = s.scalars(select(Region).where(
            Region.id.in_(select(Customer.region_id).where(Customer.name == "a2")))).all()
        assert [r.id for r in regions] == [1]
        s.add(Shop(id=1, name="shop", customer_id=1))
        s.add(Tally(id=1))
        s.commit()
    with Session(engine) as s:
        shop = s.scalars(select(Shop)).unique().one()
        assert shop.best is not None and shop.best.name == "a2"  # one current row
        assert s.scalars(select(Tally)).one().customers == 2  # not 3 versions


def test_library_writes_leave_sqlite_raw_writers_versioned(sqlite_url: Any) -> None:
    """The library's statements run past the raw writers' triggers, and the clock's
    mark is back as soon as they are done: a raw UPDATE in the same transaction is
    versioned, after a failed flush too."""
    engine = sa.create_engine(sqlite_url)
    _customers(engine)
    with Session(engine) as s:
        s.get(Customer, 2).name = "b2"  # type: ignore[union-attr]
        s.flush()
        marker = s.execute(text("SELECT marker FROM temporal_clock")).scalar_one()
        assert marker == LIBRARY_MARK
        s.execute(text("UPDATE customers SET tier = 'gold' WHERE id = 1"))
        s.commit()
    with Session(engine) as s:
        assert [v.tier for v in history(s, Customer, 1)] == ["basic", "basic", "gold"]
        assert [v.name for v in history(s, Customer, 2)] == ["b", "b2"]
    with Session(engine) as s:
        customer = s.get(Customer, 1)
        assert customer is not None
        with engine.begin() as other:  # a concurrent writer gets there first
            other.execute(text("UPDATE customers SET tier = 'silver' WHERE id = 1"))
        customer.name = "stale"
        with pytest.raises(ConflictError):
            s.flush()
        s.rollback()
        assert s.execute(text("SELECT marker FROM temporal_clock")).scalar_one() \
            != MAINTENANCE_MARK
        s.execute(text("UPDATE customers SET tier = 'bronze' WHERE id = 2"))
        s.commit()
    with Session(engine) as s:
        assert [v.tier for v in history(s, Customer, 2)] == ["basic", "basic", "bronze"]
    engine.dispose()

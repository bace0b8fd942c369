"""ORM-enabled insert()/update()/delete() statements on temporal models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import URL, Engine, create_engine, delete, event, insert, select, update
from sqlalchemy.orm import Session

from temporal import UnsupportedError, history, transaction_time
from tests.models import Base, Customer, Line


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.execute(insert(Customer), [{"name": f"c{i}", "tier": "basic", "score": float(i)}
                                     for i in range(1, 101)])
    yield engine


def physical(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Customer.__table__)
                                 .order_by(Customer.__table__.c.id,
                                           Customer.__table__.c.created_at)))


class StatementCounter:
    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.count += 1


def test_bulk_insert_stamps_every_row(db: Engine) -> None:
    rows = physical(db)
    assert len(rows) == 100 and {r.id for r in rows} == set(range(1, 101))
    assert len({r.created_at for r in rows}) == 1
    assert all(r.expired_at is None for r in rows)
    with Session(db) as s, s.begin():
        s.execute(insert(Customer).values(name="single"))
        stamp = transaction_time(s)
    assert [r.created_at for r in physical(db) if r.name == "single"] == [stamp]


def test_bulk_update_versions_the_matching_rows_set_based(db: Engine) -> None:
    counter = StatementCounter(db)
    with Session(db) as s, s.begin():
        result = s.execute(update(Customer).where(Customer.score > 50)
                           .values(tier="gold", score=Customer.score * 10))
        stamp = transaction_time(s)
    assert result.rowcount == 50
    assert counter.count <= 6  # a handful of statements, not one per row
    rows = physical(db)
    assert len(rows) == 150
    with Session(db) as s:
        versions = history(s, Customer, 60)
        assert [(v.tier, v.score) for v in versions] == [("basic", 60.0), ("gold", 600.0)]
        assert versions[0].expired_at == versions[1].created_at == stamp
        assert versions[1].name == "c60"  # untouched columns carry over
        assert [v.tier for v in history(s, Customer, 10)] == ["basic"]


def test_bulk_update_twice_in_one_transaction_leaves_one_version(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.execute(update(Customer).where(Customer.id <= 3).values(tier="silver"))
        s.execute(update(Customer).where(Customer.id <= 3).values(tier="gold"))
        s.execute(update(Customer).where(Customer.id <= 2).values(score=Customer.score + 1))
    with Session(db) as s:
        assert [(v.tier, v.score) for v in history(s, Customer, 1)] == [
            ("basic", 1.0), ("gold", 2.0)]
        assert [v.tier for v in history(s, Customer, 3)] == ["basic", "gold"]


def test_bulk_update_by_primary_key(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.execute(update(Customer), [{"id": 1, "tier": "gold"}, {"id": 2, "name": "two"}])
    with Session(db) as s:
        assert [v.tier for v in history(s, Customer, 1)] == ["basic", "gold"]
        assert [v.name for v in history(s, Customer, 2)] == ["c2", "two"]


def test_bulk_update_refreshes_objects_in_the_session(db: Engine) -> None:
    with Session(db) as s, s.begin():
        c = s.get(Customer, 5)
        assert c.tier == "basic"
        s.execute(update(Customer).where(Customer.id == 5).values(tier="gold"))
        assert c.tier == "gold"


def test_bulk_delete_expires_and_removes_from_the_session(db: Engine) -> None:
    with Session(db) as s, s.begin():
        c = s.get(Customer, 7)
        result = s.execute(delete(Customer).where(Customer.id.in_([7, 8, 9])))
        stamp = transaction_time(s)
        assert result.rowcount == 3
        assert c not in s
        assert s.get(Customer, 7) is None
    rows = [r for r in physical(db) if r.id in (7, 8, 9)]
    assert len(rows) == 3 and all(r.expired_at == stamp for r in rows)


def test_bulk_delete_of_rows_inserted_in_the_same_transaction_leaves_nothing(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.execute(insert(Customer), [{"id": 500, "name": "new"}])
        s.execute(update(Customer).where(Customer.id == 1).values(tier="gold"))
        s.execute(delete(Customer).where(Customer.id.in_([500, 1])))
    rows = [r for r in physical(db) if r.id in (1, 500)]
    assert [(r.id, r.tier, r.expired_at is None) for r in rows] == [(1, "basic", False)]


def test_bulk_statements_on_composite_keys(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.execute(insert(Line), [{"order_no": "A", "line_no": n, "sku": "x", "qty": n}
                                 for n in (1, 2, 3)])
    with Session(db) as s, s.begin():
        s.execute(update(Line).where(Line.line_no >= 2).values(qty=Line.qty * 100))
        s.execute(delete(Line).where(Line.line_no == 3))
    with Session(db) as s:
        assert [(x.line_no, x.qty) for x in s.scalars(select(Line).order_by(Line.line_no))] == [
            (1, 1), (2, 200)]
        # update then delete in one transaction: only the value from before it remains
        assert [v.qty for v in history(s, Line, ("A", 3))] == [3]


def test_unsupported_forms_are_refused_without_writing(db: Engine) -> None:
    before = physical(db)
    with Session(db) as s:
        with pytest.raises(UnsupportedError, match="key names the entity"):
            s.execute(update(Customer).where(Customer.id == 1).values(id=1000))
        with pytest.raises(UnsupportedError, match="period columns"):
            s.execute(update(Customer).values(expired_at=None))
        with pytest.raises(UnsupportedError, match="RETURNING"):
            s.execute(update(Customer).values(tier="x").returning(Customer.id))
        with pytest.raises(UnsupportedError, match="from_select"):
            s.execute(insert(Customer).from_select(["name"], select(Customer.name)))
        s.rollback()
    assert physical(db) == before


def test_an_explicit_id_in_insert_values_is_never_handed_out_again(sqlite_url: URL) -> None:
    # SQLite only: there temporal hands out ids itself. (PostgreSQL's identity
    # column, like any, is not advanced by explicit ids.)
    engine = create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.execute(insert(Customer), [{"name": "generated"}])  # primes the id counter
        s.execute(insert(Customer).values(id=1000, name="explicit"))
        s.add(Customer(name="next"))
        s.flush()
        assert s.scalars(select(Customer.id).where(Customer.name == "next")).one() > 1000
    engine.dispose()

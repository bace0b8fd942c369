"""As-of ORM reads across the archive read the same past on both backends.

PostgreSQL reads ``<table>_archive`` as a child of the table; SQLite renders
the table as the union of both for statements older than the archived horizon.
Relationship loads, aliases and joins read archived versions too, and the
same past comes back before and after archival.
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, aliased, joinedload, selectinload

from temporal import archive, as_of, export, triggers
from tests.models import Base, Customer, Order

DAY = timedelta(days=1)


def _write_old_history(engine: Engine, start: datetime) -> None:
    """Customer 1 with two orders; the customer and one order change a day later."""
    customers, orders = Customer.__table__, Order.__table__
    day1, day2 = start, start + DAY
    with engine.begin() as conn, triggers.maintenance(conn):  # forged: past the triggers
        conn.execute(customers.insert(), [  # type: ignore[attr-defined]
            {"id": 1, "name": "old", "tier": "basic", "revision_note": "x",
             "status": "active", "created_at": day1, "expired_at": day2},
            {"id": 1, "name": "new", "tier": "basic", "revision_note": "x",
             "status": "active", "created_at": day2, "expired_at": None},
        ])
        conn.execute(orders.insert(), [  # type: ignore[attr-defined]
            {"id": 10, "customer_id": 1, "amount": 5, "created_at": day1, "expired_at": day2},
            {"id": 10, "customer_id": 1, "amount": 50, "created_at": day2, "expired_at": None},
            {"id": 11, "customer_id": 1, "amount": 7, "created_at": day1, "expired_at": day2},
        ])


def _read_past(engine: Engine, at: datetime) -> list[object]:
    seen: list[object] = []
    with Session(engine) as s:
        for load in ([], [selectinload(Customer.orders)], [joinedload(Customer.orders)]):
            c = s.scalars(select(Customer).options(as_of(at), *load)).unique().one()
            seen.append((c.name, [(o.id, o.amount) for o in c.orders]))
            s.expunge_all()
        order = s.get(Order, 11, options=[as_of(at)])
        seen.append((order.amount, order.customer.name))
        other = aliased(Customer)
        seen.append(s.execute(select(Order.id, other.name).join(
            other, other.id == Order.customer_id).options(as_of(at)).order_by(Order.id)).all())
        seen.append(s.scalars(select(Customer.name).options(as_of(at + 2 * DAY))).all())
    return seen


def test_as_of_reads_see_archived_versions_on_both_backends(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    start = datetime.now().astimezone() - 90 * DAY
    _write_old_history(engine, start)
    at = start + DAY / 2
    before = _read_past(engine, at)
    assert before[0] == ("old", [(10, 5), (11, 7)])
    assert before[3] == (7, "old")
    assert archive(engine, ttl=30 * DAY).moved == 3  # everything that expired
    assert _read_past(engine, at) == before
    with Session(engine) as s:  # the present is untouched by the archive
        assert [(o.id, o.amount) for o in s.get(Customer, 1).orders] == [(10, 50)]


def test_a_query_export_counts_archived_versions_on_both_backends(engine: Engine,
                                                                   tmp_path: Path) -> None:
    """``count(*)`` and ``count(id)`` of a table whose versions at the moment were
    archived: the same answer before and after archival (on SQLite the as-of view is
    a union, which SQLite's count-of-view optimisation must not turn into a refused
    read of the view)."""
    Base.metadata.create_all(engine)
    start = datetime.now().astimezone() - 90 * DAY
    _write_old_history(engine, start)
    at = start + DAY / 2
    query = "SELECT count(*) AS a, count(id) AS b FROM orders"

    def counted(name: str) -> list[list[str]]:
        export(engine, tmp_path / name, as_of=at, query=query)
        with open(tmp_path / name / "query" / "part-00000.csv") as f:
            return list(csv.reader(f))[1:]

    before = counted("before")
    assert archive(engine, ttl=30 * DAY).moved == 3
    assert counted("after") == before == [["2", "2"]]

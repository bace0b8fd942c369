"""Two writers on one row, against real PostgreSQL."""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from temporal import ConflictError, history, transaction_time
from tests.models import Base, Customer

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s, s.begin():
        s.add_all([Customer(id=i, name=f"c{i}", score=0.0) for i in (1, 2, 3)])
    yield pg_engine


def assert_contiguous(engine: Engine, cid: int) -> list[float | None]:
    with Session(engine) as s:
        versions = history(s, Customer, cid)
    for older, newer in itertools.pairwise(versions):
        assert older.created_at < older.expired_at == newer.created_at
    assert versions[-1].expired_at is None or versions[-1].created_at < versions[-1].expired_at
    return [v.score for v in versions]


@pytest.mark.parametrize("how", ["orm", "bulk update", "orm delete", "bulk delete"])
def test_an_older_transaction_cannot_overwrite_a_younger_ones_version(
    db: Engine, how: str
) -> None:
    older = Session(db)
    older_stamp = transaction_time(older, Customer)  # older stamps first ...
    with Session(db) as younger, younger.begin():  # ... the younger commits first
        younger.get(Customer, 1).score = 1.0
        assert transaction_time(younger) > older_stamp
    with pytest.raises(ConflictError, match="concurrent transaction"):
        if how == "orm":
            older.get(Customer, 1).score = 2.0
            older.flush()
        elif how == "bulk update":
            older.execute(update(Customer).where(Customer.id == 1).values(score=2.0))
        elif how == "orm delete":
            older.delete(older.get(Customer, 1))
            older.flush()
        else:
            older.execute(delete(Customer).where(Customer.id <= 2))
    older.rollback()
    older.close()
    assert assert_contiguous(db, 1) == [0.0, 1.0]


def test_a_younger_writer_that_waited_on_an_older_one_builds_on_its_version(db: Engine) -> None:
    older = Session(db)
    older.get(Customer, 1).score = 1.0
    older.flush()  # holds the row lock, stamped first
    done = threading.Event()
    errors: list[BaseException] = []

    def younger_writer() -> None:
        try:
            with Session(db) as s, s.begin():
                transaction_time(s)  # stamped after the older one
                s.execute(update(Customer).where(Customer.id == 1)
                          .values(score=Customer.score + 10))
        except BaseException as error:  # reported to the main thread
            errors.append(error)
        finally:
            done.set()

    worker = threading.Thread(target=younger_writer)
    worker.start()
    assert not done.wait(0.5), "the younger writer should wait for the row lock"
    older.commit()
    older.close()
    worker.join(10)
    assert errors == []
    assert assert_contiguous(db, 1) == [0.0, 1.0, 11.0]


def test_six_threads_hammering_three_keys_keep_history_exact(db: Engine) -> None:
    commits: Counter[int] = Counter()
    lock = threading.Lock()
    failures: list[BaseException] = []
    conflicts = Counter[str]()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            cid = rng.choice((1, 2, 3))
            for _attempt in range(100):
                try:
                    with Session(db) as s, s.begin():
                        if rng.random() < 0.5:
                            c = s.get(Customer, cid)
                            c.score = (c.score or 0) + 1
                        else:
                            s.execute(update(Customer).where(Customer.id == cid)
                                      .values(score=Customer.score + 1))
                    with lock:
                        commits[cid] += 1
                    break
                except ConflictError:
                    with lock:
                        conflicts["conflict"] += 1
                except BaseException as error:
                    failures.append(error)
                    return

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert sum(commits.values()) == 150
    for cid in (1, 2, 3):
        scores = assert_contiguous(db, cid)
        assert len(scores) == 1 + commits[cid]  # one version per successful commit
        assert scores == [float(n) for n in range(len(scores))]  # no lost update
    with Session(db) as s:
        current = s.execute(select(Customer.id, Customer.score).order_by(Customer.id)).all()
    assert current == [(cid, float(commits[cid])) for cid in (1, 2, 3)]


def test_an_orm_change_computed_from_a_replaced_version_is_a_conflict(db: Engine) -> None:
    stale = Session(db)
    c = stale.get(Customer, 1)  # reads the version with score 0.0 (no stamp yet)
    with Session(db) as other, other.begin():
        other.get(Customer, 1).score = 5.0
    c.score = c.score + 1  # computed from a version that is no longer current
    with pytest.raises(ConflictError, match="changed since it was read"):
        stale.flush()
    stale.rollback()
    stale.close()
    assert assert_contiguous(db, 1) == [0.0, 5.0]


@pytest.mark.parametrize("how", ["orm", "bulk update", "orm insert"])
def test_a_deadlock_victim_gets_a_conflict_error(db: Engine, how: str) -> None:
    """Two transactions take two rows in opposite orders: one must lose, retryably."""
    first, second = Session(db), Session(db)

    def change(s: Session, cid: int) -> None:
        if how == "orm":
            s.get(Customer, cid).score = 9.0
            s.flush()
        elif how == "bulk update":
            s.execute(update(Customer).where(Customer.id == cid).values(score=9.0))
        else:  # the ORM's own INSERT waits on the other's uncommitted new key
            s.add(Customer(id=100 + cid, name="new"))
            s.flush()

    change(first, 1)
    change(second, 2)
    outcomes: dict[str, str] = {}

    def cross(name: str, s: Session, cid: int) -> None:
        try:
            change(s, cid)
            s.commit()
            outcomes[name] = "committed"
        except ConflictError:
            outcomes[name] = "conflict"
        except BaseException as error:  # reported through the assertion below
            outcomes[name] = repr(error)
        finally:
            s.rollback()  # the victim lets the winner go on

    threads = [threading.Thread(target=cross, args=("first", first, 2)),
               threading.Thread(target=cross, args=("second", second, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    first.close()
    second.close()
    assert sorted(outcomes.values()) == ["committed", "conflict"], outcomes

"""Dynamic and write-only collections, and merging detached objects.

An as-of object's ``lazy="dynamic"`` and write-only collections read its own
moment, like its ordinary relationships; merging a detached object that a
concurrent transaction has changed since is a retryable ConflictError, never a
silent overwrite (sqlalchemy-history and Continuum port).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, String, select
from sqlalchemy.orm import (
    DeclarativeBase,
    DynamicMapped,
    Mapped,
    Session,
    WriteOnlyMapped,
    mapped_column,
    relationship,
)

from temporal import ConflictError, Temporal, as_of, history, transaction_time


class Base(DeclarativeBase):
    pass


class Shelf(Temporal, Base):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(20))
    books: DynamicMapped[Book] = relationship(
        primaryjoin="Shelf.id == foreign(Book.shelf_id)", order_by="Book.id", viewonly=True)
    stack: WriteOnlyMapped[Book] = relationship(
        primaryjoin="Shelf.id == foreign(Book.shelf_id)", order_by="Book.id", viewonly=True)


class Book(Temporal, Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int]
    title: Mapped[str] = mapped_column(String(20))


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    yield engine


def test_dynamic_and_write_only_collections_read_their_objects_moment(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Shelf(id=1, label="a"), Book(id=1, shelf_id=1, title="old"),
                   Book(id=2, shelf_id=1, title="gone")])
        t1 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.get(Book, 1).title = "new"
        s.delete(s.get(Book, 2))
        s.add(Book(id=3, shelf_id=1, title="later"))
    with Session(db) as s:
        past = s.get(Shelf, 1, options=[as_of(t1)])
        now = s.get(Shelf, 1)
        assert [b.title for b in past.books] == ["old", "gone"]
        assert past.books.count() == 2
        assert [b.title for b in past.books.filter(Book.id > 1)] == ["gone"]
        assert [b.title for b in s.scalars(past.stack.select())] == ["old", "gone"]
        assert [b.title for b in now.books] == ["new", "later"]
        assert [b.title for b in s.scalars(now.stack.select())] == ["new", "later"]
        # The past books are past objects too, apart from the current ones.
        assert past.books[0] is not s.get(Book, 1)


def test_merging_a_stale_detached_object_is_a_conflict(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add(Shelf(id=1, label="a"))
    with Session(db, expire_on_commit=False) as s:
        stale = s.get(Shelf, 1)
    with Session(db) as s, s.begin():
        s.get(Shelf, 1).label = "b"  # a concurrent change after the detached read
    stale.label = "c"
    with Session(db) as s, pytest.raises(ConflictError, match="re-read it and retry"), \
            s.begin():
        s.merge(stale)
    with Session(db) as s:
        assert [v.label for v in history(s, Shelf, 1)] == ["a", "b"]  # nothing overwritten


def test_merging_a_fresh_detached_object_applies_its_changes(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add(Shelf(id=1, label="a"))
    with Session(db, expire_on_commit=False) as s:
        detached = s.get(Shelf, 1)
    detached.label = "b"
    with Session(db) as s, s.begin():
        s.merge(detached)
    with Session(db) as s:
        assert [v.label for v in history(s, Shelf, 1)] == ["a", "b"]
        assert s.scalars(select(Shelf.label)).all() == ["b"]

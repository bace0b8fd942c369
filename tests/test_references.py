"""Foreign keys to temporal tables, enforced by PostgreSQL and SQLite.

A plain ``ForeignKey("authors.id")`` to a temporal model becomes a reference
to its entity-key table: unknown ids are refused by the database, deleting an
entity keeps references valid (its history stays), and removing a key that is
still referenced is refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    event,
    exc,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from temporal import Temporal, as_of, transaction_time
from temporal.references import key_table_name


class Base(DeclarativeBase):
    pass


class Author(Temporal, Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Post(Base):
    """A plain table referencing a temporal one."""

    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship()


class Review(Temporal, Base):
    """A temporal table referencing a temporal one: every version is checked."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    stars: Mapped[int]
    author: Mapped[Author] = relationship()


def checked(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":  # SQLite checks foreign keys only when asked to
        event.listen(engine, "connect",
                     lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys = ON"))


class Person(Temporal, Base):
    """A temporal table referencing itself."""

    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)
    mentor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    checked(engine)
    Base.metadata.create_all(engine)
    yield engine


def test_unknown_ids_are_refused_by_the_database(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add(Author(id=1, name="Ada"))
    for row in (Post(id=1, author_id=99), Review(id=1, author_id=99, stars=3)):
        with Session(db) as s, pytest.raises(exc.IntegrityError):
            s.add(row)
            s.flush()
    with db.connect() as conn, pytest.raises(exc.IntegrityError):  # raw SQL too
        conn.execute(text("INSERT INTO posts (id, author_id) VALUES (2, 98)"))
    with Session(db) as s, s.begin():
        s.add_all([Post(id=1, author_id=1), Review(id=1, author_id=1, stars=5)])
    with Session(db) as s, s.begin():
        review = s.get(Review, 1)
        review.author_id = 99  # a new version of the review must reference a real author
        with pytest.raises(exc.IntegrityError):
            s.flush()


def test_deleting_an_entity_keeps_references_valid_and_readable(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Author(id=1, name="Ada"), Post(id=1, author_id=1),
                   Review(id=1, author_id=1, stars=4)])
        t1 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.get(Author, 1).name = "Ada L."  # new versions keep the one key
    with Session(db) as s, s.begin():
        s.delete(s.get(Author, 1))
    with Session(db) as s:
        assert s.get(Post, 1).author is None  # no current author
        assert s.get(Review, 1).author is None
        assert s.get(Review, 1, options=[as_of(t1)]).author.name == "Ada"
    with db.connect() as conn:
        assert conn.execute(text(f"SELECT id FROM {key_table_name('authors')}")).all() == [(1,)]
    with db.connect() as conn, pytest.raises(exc.IntegrityError):  # still referenced
        conn.execute(text(f"DELETE FROM {key_table_name('authors')} WHERE id = 1"))


def test_every_writer_registers_keys(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.execute(insert(Author), [{"id": 1, "name": "bulk"}])
    with db.begin() as conn:  # a version written by raw SQL (the triggers stamp it)
        conn.execute(text("INSERT INTO authors (id, name) VALUES (2, 'raw')"))
    with Session(db) as s, s.begin():
        s.add_all([Post(id=1, author_id=1), Post(id=2, author_id=2)])
    with Session(db) as s:
        assert s.scalars(select(Post.author_id).order_by(Post.id)).all() == [1, 2]


def test_a_reference_added_later_covers_existing_history(engine: Engine) -> None:
    checked(engine)
    Author.__table__.create(engine)
    with Session(engine) as s, s.begin():
        s.add(Author(id=1, name="Ada"))
    with Session(engine) as s, s.begin():
        s.delete(s.get(Author, 1))
    # A table made by a migration: its foreign key target carries no mark, the
    # catalog says it is temporal.
    unmarked = MetaData()
    Table("authors", unmarked, Column("id", Integer, primary_key=True))
    notes = Table("notes", unmarked, Column("id", Integer, primary_key=True),
                  Column("author_id", ForeignKey("authors.id")))
    notes.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(notes).values(id=1, author_id=1))  # a deleted entity's key
        with pytest.raises(exc.IntegrityError), conn.begin_nested():
            conn.execute(insert(notes).values(id=2, author_id=2))
        assert key_table_name("authors") in inspect(conn).get_table_names()
    notes.drop(engine)
    Author.__table__.drop(engine)
    assert key_table_name("authors") not in inspect(engine).get_table_names()


def test_a_foreign_key_added_by_alembic_references_the_key_table(engine: Engine) -> None:
    """``op.create_foreign_key`` (an ALTER TABLE; SQLite: batch mode) to a temporal table."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    checked(engine)
    Author.__table__.create(engine)
    with Session(engine) as s, s.begin():
        s.add(Author(id=1, name="Ada"))
    notes = Table("notes", MetaData(), Column("id", Integer, primary_key=True),
                  Column("author_id", Integer))
    notes.create(engine)
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        if engine.dialect.name == "sqlite":
            with op.batch_alter_table("notes") as batch:
                batch.create_foreign_key("notes_author", "authors", ["author_id"], ["id"])
        else:
            op.create_foreign_key("notes_author", "notes", "authors", ["author_id"], ["id"])
    assert [fk["referred_table"] for fk in inspect(engine).get_foreign_keys("notes")] == [
        key_table_name("authors")]
    with Session(engine) as s, s.begin():
        s.get(Author, 1).name = "Ada L."  # a second version: the key stays one entity
    with engine.begin() as conn:
        conn.execute(insert(notes).values(id=1, author_id=1))
        with pytest.raises(exc.IntegrityError), conn.begin_nested():
            conn.execute(insert(notes).values(id=2, author_id=2))
    notes.drop(engine)
    Author.__table__.drop(engine)


def test_a_temporal_table_may_reference_itself(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Person(id=1), Person(id=2)])
    with Session(db) as s, s.begin():
        s.delete(s.get(Person, 1))
    with Session(db) as s, s.begin():
        s.get(Person, 2).mentor_id = 1  # a deleted entity is still a known one
    with Session(db) as s, s.begin():
        s.add(Person(id=3, mentor_id=42))
        with pytest.raises(exc.IntegrityError):
            s.flush()

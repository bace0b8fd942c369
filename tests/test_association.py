"""Many-to-many through a temporal association table.

Ported from the association-table cases of SQLAlchemy-Continuum and
sqlalchemy-history: links are versioned like rows, every loading style reads
the statement's moment, and the same code behaves on a plain schema exactly
as on the temporal one for the present.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    String,
    Table,
    delete,
    event,
    exc,
    insert,
    select,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    WriteOnlyMapped,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
    subqueryload,
)

from temporal import ConflictError, Temporal, as_of, association_table, history, transaction_time


@dataclass
class Schema:
    base: type[DeclarativeBase]
    article: Any
    tag: Any
    link: Table


def make_schema(temporal: bool) -> Schema:
    """The same blog schema, temporal or plain, with every kind of collection."""

    class Base(DeclarativeBase):
        pass

    mixins: tuple[type, ...] = (Temporal, Base) if temporal else (Base,)
    columns = (Column("article_id", ForeignKey("articles.id"), primary_key=True),
               Column("tag_id", ForeignKey("tags.id"), primary_key=True))
    link = (association_table("article_tag", Base.metadata, *columns) if temporal
            else Table("article_tag", Base.metadata, *columns))

    class Article(*mixins):  # type: ignore[misc]
        __tablename__ = "articles"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(50))
        tags: Mapped[list[Tag]] = relationship(secondary=link, back_populates="articles",
                                               order_by="Tag.name")
        dynamic_tags = relationship("Tag", secondary=link, lazy="dynamic", viewonly=True,
                                    order_by="Tag.name")
        written_tags: WriteOnlyMapped[Tag] = relationship(secondary=link, viewonly=True,
                                                          order_by="Tag.name")

    class Tag(*mixins):  # type: ignore[misc]
        __tablename__ = "tags"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
        articles: Mapped[list[Article]] = relationship(secondary=link, back_populates="tags")

    return Schema(Base, Article, Tag, link)


def foreign_keys_on(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":  # SQLite checks foreign keys only when asked to
        event.listen(engine, "connect",
                     lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys = ON"))


@pytest.fixture(params=["temporal", "plain"])
def schema(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Schema]:
    made = make_schema(request.param == "temporal")
    foreign_keys_on(engine)
    made.base.metadata.create_all(engine)
    yield made


@pytest.fixture
def temporal_schema(engine: Engine) -> Iterator[Schema]:
    made = make_schema(True)
    foreign_keys_on(engine)
    made.base.metadata.create_all(engine)
    yield made


Reader = Callable[[Session, Schema, list[Any]], list[str]]


def _one_article(s: Session, m: Schema, opts: list[Any], *load: Any) -> Any:
    return s.scalars(select(m.article).options(*opts, *load)).unique().one()


READERS: dict[str, Reader] = {
    "lazy": lambda s, m, o: [t.name for t in _one_article(s, m, o).tags],
    "selectin": lambda s, m, o: [t.name for t in _one_article(
        s, m, o, selectinload(m.article.tags)).tags],
    "joined": lambda s, m, o: [t.name for t in _one_article(
        s, m, o, joinedload(m.article.tags)).tags],
    "subquery": lambda s, m, o: [t.name for t in _one_article(
        s, m, o, subqueryload(m.article.tags)).tags],
    "join": lambda s, m, o: list(s.scalars(
        select(m.tag.name).join(m.article.tags.of_type(m.tag)).options(*o)
        .order_by(m.tag.name))),
    "any": lambda s, m, o: sorted(name for name in ("x", "y", "z") if s.scalars(
        select(m.article.id).where(m.article.tags.any(m.tag.name == name)).options(*o)).all()),
    "backref": lambda s, m, o: sorted(t.name for t in s.scalars(
        select(m.tag).options(*o)) if t.articles),
    "dynamic": lambda s, m, o: [t.name for t in _one_article(s, m, o).dynamic_tags],
    "write_only": lambda s, m, o: [t.name for t in s.scalars(
        _one_article(s, m, o).written_tags.select())],
}


def read_all(engine: Engine, m: Schema, opts: list[Any],
             styles: tuple[str, ...] = tuple(READERS)) -> dict[str, list[str]]:
    out = {}
    for name in styles:
        reader = READERS[name]
        with Session(engine) as s:
            out[name] = reader(s, m, opts)
    return out


def every_style_reads(expected: list[str]) -> dict[str, list[str]]:
    return dict.fromkeys(READERS, expected)


def scenario(engine: Engine, m: Schema) -> tuple[list[datetime], list[dict[str, list[str]]]]:
    """Link, unlink, clear and re-link through the collection; reads after each step."""
    stamps: list[datetime] = []
    seen: list[dict[str, list[str]]] = []

    def step(change: Callable[[Session], None]) -> None:
        with Session(engine) as s, s.begin():
            change(s)
            stamps.append(transaction_time(s))
        seen.append(read_all(engine, m, []))

    def create(s: Session) -> None:
        s.add(m.article(id=1, title="a", tags=[m.tag(id=1, name="x"), m.tag(id=2, name="y")]))

    def swap(s: Session) -> None:
        a = s.get(m.article, 1)
        a.tags.remove(s.get(m.tag, 1))
        a.tags.append(m.tag(id=3, name="z"))

    def clear(s: Session) -> None:
        a = s.get(m.article, 1)
        a.tags.clear()

    def relink(s: Session) -> None:
        a = s.get(m.article, 1)
        a.tags = [s.get(m.tag, 2)]  # assignment

    for change in (create, swap, clear, relink):
        step(change)
    return stamps, seen


EXPECTED = [["x", "y"], ["y", "z"], [], ["y"]]


def test_every_loading_style_reads_the_present_like_a_plain_schema(
    engine: Engine, schema: Schema
) -> None:
    _, seen = scenario(engine, schema)
    assert seen == [every_style_reads(names) for names in EXPECTED]


def test_every_loading_style_reads_each_moment(engine: Engine, temporal_schema: Schema) -> None:
    m = temporal_schema
    stamps, _ = scenario(engine, m)
    tick = timedelta(microseconds=1)
    # Each moment reads the links of that moment, and the moment just before a
    # change still reads the links before it (periods are half-open).
    # Before the first moment the article itself did not exist yet.
    before_first = read_all(engine, m, [as_of(stamps[0] - tick)], ("join", "any", "backref"))
    assert before_first == {"join": [], "any": [], "backref": []}
    for i, at in enumerate(stamps):
        assert read_all(engine, m, [as_of(at)]) == every_style_reads(EXPECTED[i])
        if i + 1 < len(stamps):
            assert read_all(engine, m, [as_of(stamps[i + 1] - tick)]) == \
                every_style_reads(EXPECTED[i])
    # Reads of the present and of the past share no compiled form: after the
    # as-of reads, the present reads the present again.
    assert read_all(engine, m, []) == every_style_reads(EXPECTED[-1])


def _links(engine: Engine, m: Schema) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        t = m.link
        return [tuple(r) for r in conn.execute(
            select(t.c.tag_id, t.c.created_at, t.c.expired_at)
            .order_by(t.c.tag_id, t.c.created_at))]


def test_link_history_is_kept_as_versions(engine: Engine, temporal_schema: Schema) -> None:
    m = temporal_schema
    (t1, t2, t3, t4), _ = scenario(engine, m)
    assert _links(engine, m) == [
        (1, t1, t2),  # x: linked at t1, removed at t2
        (2, t1, t3),  # y: until the clear
        (2, t4, None),  # ... and linked again by assignment
        (3, t2, t3),  # z
    ]


def test_rollback_and_one_transaction_leave_no_trace(engine: Engine, schema: Schema) -> None:
    m = schema
    with Session(engine) as s, s.begin():
        s.add_all([m.article(id=1, title="a"), m.tag(id=1, name="x")])
    before = _rows(engine, m.link)
    with Session(engine) as s:
        a = s.get(m.article, 1)
        a.tags.append(s.get(m.tag, 1))
        s.flush()
        s.rollback()
    with Session(engine) as s, s.begin():  # linked and unlinked in one transaction
        a = s.get(m.article, 1)
        a.tags.append(s.get(m.tag, 1))
        s.flush()
        a.tags.clear()
    with Session(engine) as s, s.begin(), s.begin_nested() as inner:
        a = s.get(m.article, 1)
        a.tags.append(s.get(m.tag, 1))
        s.flush()
        inner.rollback()
    assert _rows(engine, m.link) == before == []


def _rows(engine: Engine, table: Table) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(table))]


def test_linking_twice_is_refused_as_on_a_plain_table(engine: Engine, schema: Schema) -> None:
    m = schema
    with Session(engine) as s, s.begin():
        s.add(m.article(id=1, title="a", tags=[m.tag(id=1, name="x")]))
    with Session(engine) as s:
        a = s.get(m.article, 1)
        a.tags.append(s.get(m.tag, 1))  # a second link between the same two rows
        with pytest.raises(exc.IntegrityError):
            s.flush()


def test_deleting_an_entity_ends_its_links(engine: Engine, temporal_schema: Schema) -> None:
    m = temporal_schema
    with Session(engine) as s, s.begin():
        s.add(m.article(id=1, title="a", tags=[m.tag(id=1, name="x")]))
        t1 = transaction_time(s)
    with Session(engine) as s, s.begin():
        s.delete(s.get(m.article, 1))
    with Session(engine) as s:
        assert s.get(m.tag, 1).articles == []
        old = s.get(m.tag, 1, options=[as_of(t1)])
        assert [a.title for a in old.articles] == ["a"]
    assert [r[2] is not None for r in _links(engine, m)] == [True]  # expired, not deleted


def test_a_link_removed_concurrently_is_a_conflict(engine: Engine, temporal_schema: Schema
                                                   ) -> None:
    m = temporal_schema
    with Session(engine) as s, s.begin():
        s.add(m.article(id=1, title="a", tags=[m.tag(id=1, name="x")]))
    first, second = Session(engine), Session(engine)
    try:
        a1, a2 = first.get(m.article, 1), second.get(m.article, 1)
        a1.tags.clear()
        assert [t.name for t in a2.tags] == ["x"]
        first.commit()
        a2.tags.clear()
        with pytest.raises(ConflictError, match="article_tag"):
            second.commit()
    finally:
        first.close()
        second.close()


def test_writes_through_the_collection_of_a_past_object_are_refused(
    engine: Engine, temporal_schema: Schema
) -> None:
    from temporal import ReadOnlyError

    m = temporal_schema
    with Session(engine) as s, s.begin():
        s.add(m.article(id=1, title="a", tags=[m.tag(id=1, name="x")]))
        t1 = transaction_time(s)
    with Session(engine) as s:
        old = s.get(m.article, 1, options=[as_of(t1)])
        old.tags.clear()
        with pytest.raises(ReadOnlyError):
            s.flush()


# -- an association declared as a model ------------------------------------------


class ModelBase(DeclarativeBase):
    pass


class Student(Temporal, ModelBase):
    __tablename__ = "students"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    courses: Mapped[list[Course]] = relationship(secondary="enrolments", order_by="Course.id")


class Course(Temporal, ModelBase):
    __tablename__ = "courses"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))


class Enrolment(Temporal, ModelBase):
    """The association as a model: history() and bulk statements work on the links."""

    __tablename__ = "enrolments"
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id"), primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id"), primary_key=True)


@pytest.fixture
def school(engine: Engine) -> Iterator[Engine]:
    foreign_keys_on(engine)
    ModelBase.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Student(id=1, name="Ada"), Course(id=1, title="maths"),
                   Course(id=2, title="logic")])
    yield engine


def test_an_association_model_versions_links_written_either_way(school: Engine) -> None:
    with Session(school) as s, s.begin():
        ada = s.get(Student, 1)
        ada.courses.append(s.get(Course, 1))
        t1 = transaction_time(s)
    with Session(school) as s, s.begin():  # bulk statements on the association model
        s.execute(insert(Enrolment), [{"student_id": 1, "course_id": 2}])
        s.execute(delete(Enrolment).where(Enrolment.course_id == 1))
        t2 = transaction_time(s)
    with Session(school) as s:
        assert [c.title for c in s.get(Student, 1).courses] == ["logic"]
        assert [c.title for c in s.get(Student, 1, options=[as_of(t1)]).courses] == ["maths"]
        assert [(v.created_at, v.expired_at) for v in history(s, Enrolment, (1, 1))] == \
            [(t1, t2)]
        assert [c.title for c in s.get(Student, 1, options=[as_of(t2)]).courses] == ["logic"]


# -- ported from SQLAlchemy-Continuum's many-to-many cases ----------------------------


def test_deleting_the_other_entity_ends_the_link(engine: Engine, temporal_schema: Schema
                                                 ) -> None:
    m = temporal_schema
    with Session(engine) as s, s.begin():
        s.add(m.article(id=1, title="a", tags=[m.tag(id=1, name="x")]))
        t1 = transaction_time(s)
    with Session(engine) as s, s.begin():
        s.delete(s.get(m.tag, 1))  # the tag, not the link
        s.get(m.article, 1).title = "b"
    with Session(engine) as s:
        assert s.get(m.article, 1).tags == []
        assert [t.name for t in s.get(m.article, 1, options=[as_of(t1)]).tags] == ["x"]
    assert [r[2] is not None for r in _links(engine, m)] == [True]


def test_links_and_both_entities_changing_over_several_transactions(
    engine: Engine, temporal_schema: Schema
) -> None:
    m = temporal_schema
    with Session(engine) as s, s.begin():
        s.add(m.article(id=1, title="a", tags=[m.tag(id=1, name="x")]))
        t1 = transaction_time(s)
    with Session(engine) as s, s.begin():
        a, x = s.get(m.article, 1), s.get(m.tag, 1)
        a.tags.append(m.tag(id=2, name="y"))
        x.name, a.title = "x2", "a2"
        t2 = transaction_time(s)
    with Session(engine) as s, s.begin():
        a, x = s.get(m.article, 1), s.get(m.tag, 1)
        x.name, a.title = "x3", "a3"
        t3 = transaction_time(s)
    with Session(engine) as s:
        seen = [(a.title, [t.name for t in a.tags]) for a in
                (s.get(m.article, 1, options=[as_of(t)]) for t in (t1, t2, t3))]
        assert seen == [("a", ["x"]), ("a2", ["x2", "y"]), ("a3", ["x3", "y"])]
        # each tag, at each moment, is that moment's version
        assert [[a.title for a in s.get(m.tag, 2, options=[as_of(t)]).articles]
                for t in (t2, t3)] == [["a2"], ["a3"]]


def test_a_self_referential_many_to_many(engine: Engine) -> None:
    class Base(DeclarativeBase):
        pass

    citations = association_table(
        "cites", Base.metadata,
        Column("citing_id", ForeignKey("papers.id"), primary_key=True),
        Column("cited_id", ForeignKey("papers.id"), primary_key=True),
    )

    class Paper(Temporal, Base):
        __tablename__ = "papers"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(50))
        cites: Mapped[list[Paper]] = relationship(
            secondary=citations, primaryjoin=lambda: Paper.id == citations.c.citing_id,
            secondaryjoin=lambda: Paper.id == citations.c.cited_id, backref="cited_by",
            order_by=lambda: Paper.id)

    foreign_keys_on(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add(Paper(id=1, title="p1", cites=[Paper(id=2, title="p2")]))
        t1 = transaction_time(s)
    with Session(engine) as s, s.begin():
        p1 = s.get(Paper, 1)
        p1.cites.append(Paper(id=3, title="p3"))
        p1.cites.remove(s.get(Paper, 2))
        t2 = transaction_time(s)
    with Session(engine) as s:
        assert [p.id for p in s.get(Paper, 1, options=[as_of(t1)]).cites] == [2]
        assert [p.id for p in s.get(Paper, 1, options=[as_of(t2)]).cites] == [3]
        assert [p.id for p in s.get(Paper, 2, options=[as_of(t1)]).cited_by] == [1]
        assert s.get(Paper, 2).cited_by == []
        assert [p.id for p in s.get(Paper, 3).cited_by] == [1]

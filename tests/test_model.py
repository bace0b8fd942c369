"""Model shapes: a model's own mapper and table arguments, and inheritance.

Ported from django-simple-history's inheritance cases and SQLAlchemy's
``versioned_rows`` examples: a temporal model may carry its own
``__mapper_args__`` and ``__table_args__`` exactly as a plain model does, and
single-table inheritance versions subclass rows and reads them polymorphically
at any moment.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import (
    Engine,
    ForeignKey,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    exc,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import Temporal, TemporalError, UnsupportedError, as_of, history, transaction_time


class Base(DeclarativeBase):
    pass


class Employee(Temporal, Base):
    __tablename__ = "employees"
    __mapper_args__ = {"eager_defaults": True, "polymorphic_on": "kind",
                       "polymorphic_identity": "employee"}
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), server_default="active")


class Manager(Employee):
    __mapper_args__ = {"polymorphic_identity": "manager"}
    reports: Mapped[int | None]


class Engineer(Employee):
    __mapper_args__ = {"polymorphic_identity": "engineer"}
    language: Mapped[str | None] = mapped_column(String(20))


class Membership(Temporal, Base):
    """A key declared the table way, with a named constraint and a current-unique one."""

    __tablename__ = "memberships"
    __table_args__ = (PrimaryKeyConstraint("user_id", "team_id", name="memberships_pk"),
                      UniqueConstraint("badge"))
    user_id: Mapped[int]
    team_id: Mapped[int]
    role: Mapped[str] = mapped_column(String(20))
    badge: Mapped[str | None] = mapped_column(String(20))


class PlainEmployee(Base):
    """The same hierarchy, unversioned, to compare behaviour with."""

    __tablename__ = "plain_employees"
    __mapper_args__ = {"eager_defaults": True, "polymorphic_on": "kind",
                       "polymorphic_identity": "employee"}
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), server_default="active")


class PlainManager(PlainEmployee):
    __mapper_args__ = {"polymorphic_identity": "manager"}
    reports: Mapped[int | None]


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    yield engine


def test_own_mapper_args_merge_with_the_mixins() -> None:
    for model in (Employee, Manager, Engineer):
        assert [c.name for c in inspect(model).primary_key] == ["id"]  # never (id, created_at)
    assert inspect(Employee).eager_defaults is True
    # A subclass's own arguments replace its parent's, as on a plain model.
    assert inspect(Manager).eager_defaults == inspect(PlainManager).eager_defaults
    assert inspect(Manager).polymorphic_identity == "manager"
    assert [c.name for c in Employee.__table__.primary_key] == ["id", "created_at"]


@pytest.mark.parametrize("models", [(Employee, Manager), (PlainEmployee, PlainManager)],
                         ids=["temporal", "plain"])
def test_eager_defaults_and_get_behave_like_a_plain_model(
    db: Engine, models: tuple[type[Employee], type[Manager]]
) -> None:
    base, sub = models
    with Session(db) as s, s.begin():
        boss, clerk = sub(id=1, name="Grace", reports=3), base(id=2, name="Bob")
        s.add_all([boss, clerk])
        s.flush()
        assert "status" in clerk.__dict__  # fetched by the flush itself (eager_defaults)
        assert boss.status == clerk.status == "active"
    with Session(db) as s, s.begin():
        found = s.get(base, 1)
        assert type(found) is sub and found.reports == 3
        found.reports = 4
    with Session(db) as s:
        assert s.get(sub, 1).reports == 4
        assert s.get(base, 1).name == "Grace"


def test_single_table_inheritance_versions_subclass_rows(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Manager(id=1, name="Grace", reports=3),
                   Engineer(id=2, name="Linus", language="C"), Employee(id=3, name="Ada")])
        t1 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.get(Engineer, 2).language = "Rust"
        s.get(Manager, 1).reports = 5
        t2 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.delete(s.get(Employee, 3))
        s.execute(update(Engineer).where(Engineer.id == 2).values(language="Zig"))
        t3 = transaction_time(s)

    def staff(at: object = None) -> list[tuple[str, str, object]]:
        with Session(db) as s:
            opts = [as_of(at)] if at is not None else []
            rows = s.scalars(select(Employee).options(*opts).order_by(Employee.id))
            return [(type(e).__name__, e.name, getattr(e, "reports", None)
                     or getattr(e, "language", None)) for e in rows]

    assert staff(t1) == [("Manager", "Grace", 3), ("Engineer", "Linus", "C"),
                         ("Employee", "Ada", None)]
    assert staff(t2) == [("Manager", "Grace", 5), ("Engineer", "Linus", "Rust"),
                         ("Employee", "Ada", None)]
    assert staff(t3) == staff() == [("Manager", "Grace", 5), ("Engineer", "Linus", "Zig")]
    with Session(db) as s:
        # A subclass query reads only that subclass, at any moment.
        assert [e.name for e in s.scalars(select(Engineer).options(as_of(t1)))] == ["Linus"]
        assert s.get(Manager, 2, options=[as_of(t1)]) is None
        assert [v.language for v in history(s, Engineer, 2)] == ["C", "Rust", "Zig"]
        assert [(v.created_at, v.expired_at) for v in history(s, Employee, 3)] == [(t1, t3)]


def test_a_primary_key_constraint_names_the_entity(db: Engine) -> None:
    table = Membership.__table__
    assert table.primary_key.name == "memberships_pk"
    assert [c.name for c in table.primary_key.columns] == ["user_id", "team_id", "created_at"]
    assert [c.name for c in inspect(Membership).primary_key] == ["user_id", "team_id"]
    with Session(db) as s, s.begin():
        s.add(Membership(user_id=1, team_id=2, role="member", badge="b1"))
    with Session(db) as s, s.begin():
        s.get(Membership, (1, 2)).role = "owner"
    with Session(db) as s, s.begin():
        s.add(Membership(user_id=2, team_id=2, role="member", badge="b1"))
        with pytest.raises(exc.IntegrityError):  # badge: unique among current rows
            s.flush()
    with Session(db) as s:
        assert [v.role for v in history(s, Membership, (1, 2))] == ["member", "owner"]


def test_bad_keys_are_refused_with_a_temporal_error() -> None:
    class Other(DeclarativeBase):
        pass

    with pytest.raises(UnsupportedError, match="needs primary key columns"):
        class NoKey(Temporal, Other):
            __tablename__ = "no_key"
            __mapper_args__ = {"primary_key": []}  # ask declarative for none
            name: Mapped[str] = mapped_column(primary_key=False)

    with pytest.raises(TemporalError, match="'nope', which is not one of its columns"):
        class Typo(Temporal, Other):
            __tablename__ = "typo"
            __table_args__ = (PrimaryKeyConstraint("nope"),)
            id: Mapped[int]


def test_a_joined_table_subclass_is_refused_with_a_clear_error() -> None:
    class Other(DeclarativeBase):
        pass

    class Animal(Temporal, Other):
        __tablename__ = "animals"
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "animal"}
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(String(20))

    with pytest.raises(UnsupportedError, match="single-table inheritance"):
        class Dog(Animal):
            __tablename__ = "dogs"
            __mapper_args__ = {"polymorphic_identity": "dog"}
            id: Mapped[int] = mapped_column(ForeignKey("animals.id"), primary_key=True)


def test_ttl_must_be_positive() -> None:
    class Other(DeclarativeBase):
        pass

    with pytest.raises(TypeError, match="positive timedelta"):
        class Bad(Temporal, Other):
            __tablename__ = "bad"
            __temporal_ttl__ = timedelta(0)
            id: Mapped[int] = mapped_column(primary_key=True)

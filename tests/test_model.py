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
    delete,
    exc,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import (
    ConflictError,
    Temporal,
    TemporalError,
    UnsupportedError,
    as_of,
    history,
    transaction_time,
)


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


class Animal(Temporal, Base):
    """Joined-table inheritance: each table keeps versions in step with the other."""

    __tablename__ = "animals"
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "animal"}
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(50))


class Dog(Animal):
    __tablename__ = "dogs"
    __mapper_args__ = {"polymorphic_identity": "dog"}
    id: Mapped[int] = mapped_column(ForeignKey("animals.id"), primary_key=True)
    bark: Mapped[str] = mapped_column(String(20))


class PlainAnimal(Base):
    __tablename__ = "plain_animals"
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "animal"}
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(50))


class PlainDog(PlainAnimal):
    __tablename__ = "plain_dogs"
    __mapper_args__ = {"polymorphic_identity": "dog"}
    id: Mapped[int] = mapped_column(ForeignKey("plain_animals.id"), primary_key=True)
    bark: Mapped[str] = mapped_column(String(20))


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


def test_ttl_must_be_positive() -> None:
    class Other(DeclarativeBase):
        pass

    with pytest.raises(TypeError, match="positive timedelta"):
        class Bad(Temporal, Other):
            __tablename__ = "bad"
            __temporal_ttl__ = timedelta(0)
            id: Mapped[int] = mapped_column(primary_key=True)


@pytest.mark.parametrize("models", [(Animal, Dog), (PlainAnimal, PlainDog)],
                         ids=["temporal", "plain"])
def test_joined_table_inheritance_reads_like_a_plain_hierarchy(
    db: Engine, models: tuple[type[Animal], type[Dog]]
) -> None:
    base, sub = models
    with Session(db) as s, s.begin():
        s.add_all([sub(id=1, name="rex", bark="woof"), base(id=2, name="cat")])
    with Session(db) as s, s.begin():
        s.get(sub, 1).bark = "WOOF"
    with Session(db) as s, s.begin():
        s.get(base, 1).name = "Rex"  # a parent column, through the polymorphic parent
    with Session(db) as s, s.begin():
        s.delete(s.get(base, 2))
    with Session(db) as s:
        everyone = s.scalars(select(base).order_by(base.id)).all()
        assert [(type(a).__name__, a.name) for a in everyone] == [(sub.__name__, "Rex")]
        assert everyone[0].bark == "WOOF"  # the subclass table, loaded on access
        assert [(d.name, d.bark) for d in s.scalars(select(sub))] == [("Rex", "WOOF")]


def test_joined_table_inheritance_versions_both_tables_in_step(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Dog(id=1, name="rex", bark="woof"), Animal(id=2, name="cat")])
        t1 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.get(Dog, 1).bark = "WOOF"  # only the subclass table changes ...
        t2 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.get(Animal, 1).name = "Rex"  # ... only the parent table changes
        t3 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.delete(s.get(Animal, 1))
        t4 = transaction_time(s)
    with Session(db) as s:
        seen = []
        for at in (t1, t2, t3):
            dog = s.scalars(select(Animal).options(as_of(at)).where(Animal.id == 1)).one()
            seen.append((type(dog).__name__, dog.name, dog.bark))
        assert seen == [("Dog", "rex", "woof"), ("Dog", "rex", "WOOF"), ("Dog", "Rex", "WOOF")]
        assert s.get(Dog, 1, options=[as_of(t4)]) is None and s.get(Dog, 1) is None
        # Both tables hold one version per change, with the same periods.
        periods = [(v.created_at, v.expired_at) for v in history(s, Dog, 1)]
        assert periods == [(t1, t2), (t2, t3), (t3, t4)]
        assert [(v.created_at, v.expired_at) for v in history(s, Animal, 1)] == periods
        assert [v.bark for v in history(s, Dog, 1)] == ["woof", "WOOF", "WOOF"]
        # A subclass's history shows every attribute of the model, its parents' too.
        assert [(v.id, v.kind, v.name, v.bark) for v in history(s, Dog, 1)] == [
            (1, "dog", "rex", "woof"), (1, "dog", "rex", "WOOF"), (1, "dog", "Rex", "WOOF")]
        assert set(history(s, Dog, 1)[0]._fields) == {
            "id", "kind", "name", "bark", "created_at", "expired_at"}


def test_bulk_statements_on_a_joined_subclass_version_every_level(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Dog(id=1, name="rex", bark="woof"), Dog(id=2, name="fido", bark="yip"),
                   Animal(id=3, name="cat")])
        t1 = transaction_time(s)
    with Session(db) as s, s.begin():
        dog = s.get(Dog, 1)  # held by the session: the statement expires what it changed
        result = s.execute(update(Dog).where(Dog.name == "rex")  # a parent's column
                           .values(bark=Dog.bark + "!", name="Rex"))
        assert result.rowcount == 1
        assert (dog.name, dog.bark, dog.created_at) == ("Rex", "woof!", transaction_time(s))
        t2 = transaction_time(s)
    with Session(db) as s, s.begin():
        held = s.get(Dog, 2)
        assert s.execute(delete(Dog).where(Dog.bark == "yip")).rowcount == 1
        assert held in s.deleted or inspect(held).was_deleted
        t3 = transaction_time(s)
    with Session(db) as s:
        assert [(v.name, v.bark, v.created_at, v.expired_at) for v in history(s, Dog, 1)] == [
            ("rex", "woof", t1, t2), ("Rex", "woof!", t2, None)]
        assert [(v.name, v.created_at, v.expired_at) for v in history(s, Animal, 1)] == [
            ("rex", t1, t2), ("Rex", t2, None)]
        for model in (Dog, Animal):  # the whole entity went, every level
            assert [(v.created_at, v.expired_at) for v in history(s, model, 2)] == [(t1, t3)]
        assert s.get(Animal, 2) is None and s.get(Animal, 3).name == "cat"
        assert s.get(Dog, 2, options=[as_of(t2)]).bark == "yip"
    with Session(db) as s, s.begin():  # one transaction: still one version per entity
        s.add(Dog(id=4, name="a", bark="b"))
        s.execute(update(Dog).where(Dog.id == 4).values(bark="c"))
        s.execute(update(Dog).where(Dog.id == 4).values(name="A"))
        t4 = transaction_time(s)
    with Session(db) as s:
        assert [(v.name, v.bark, v.created_at, v.expired_at) for v in history(s, Dog, 4)] == [
            ("A", "c", t4, None)]
        assert len(history(s, Animal, 4)) == 1
    with Session(db) as s, pytest.raises(UnsupportedError, match="joined-table"):
        s.execute(insert(Dog), [{"id": 9, "name": "x", "bark": "y"}])


def test_a_joined_subclass_bulk_update_loses_to_a_concurrent_change(db: Engine) -> None:
    """An older-stamped bulk update of an entity a younger transaction changed."""
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite serialises writers: no transaction can commit in between")
    with Session(db) as s, s.begin():
        s.add(Dog(id=1, name="rex", bark="woof"))
    with Session(db) as a, Session(db) as b:
        b.begin()
        b.add(Animal(id=5, name="cat"))
        b.flush()  # b takes its timestamp first
        with a.begin():
            a.execute(update(Dog).where(Dog.id == 1).values(bark="A"))
        with pytest.raises(ConflictError):
            b.execute(update(Dog).where(Dog.id == 1).values(bark="B"))
        b.rollback()
    with Session(db) as s:
        assert [v.bark for v in history(s, Dog, 1)] == ["woof", "A"]
        assert [v.name for v in history(s, Animal, 1)] == ["rex", "rex"]


def test_a_joined_subclass_history_reads_its_archived_versions(db: Engine) -> None:
    from temporal import archive

    stamps = []
    for bark in ("woof", "WOOF", "grr"):
        with Session(db) as s, s.begin():
            dog = s.get(Dog, 1)
            if dog is None:
                s.add(Dog(id=1, name="rex", bark=bark))
            else:
                dog.bark = bark
            stamps.append(transaction_time(s))
    with Session(db) as s:
        before = [tuple(v) for v in history(s, Dog, 1)]
    archive(db, ttl=timedelta(microseconds=1))
    with Session(db) as s:
        assert [tuple(v) for v in history(s, Dog, 1)] == before
        assert [v.bark for v in history(s, Dog, 1)] == ["woof", "WOOF", "grr"]
        assert s.get(Dog, 1, options=[as_of(stamps[0])]).bark == "woof"
    with db.connect() as conn:  # the old versions really moved
        assert conn.exec_driver_sql("SELECT count(*) FROM dogs_archive").scalar() == 2

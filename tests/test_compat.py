"""The private SQLAlchemy API that ``temporal/_compat.py`` relies on, pinned.

Each test states one assumption about SQLAlchemy internals and checks it on
plain SQLAlchemy objects and a real SQLite file, without going through the rest
of the library: when a SQLAlchemy release changes one of them, the failure
names the assumption instead of surfacing as a wrong as-of read or a lost
version somewhere else. ``.ci/run`` runs these on the lowest declared
SQLAlchemy as well as the latest (they are in the suite's SQLite half).
"""

from __future__ import annotations

import inspect as pyinspect
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
)
from sqlalchemy.sql.elements import BindParameter

from temporal import _compat
from tests.conftest import make_engine

WHO = f"SQLAlchemy {sqlalchemy.__version__}"


class Base(DeclarativeBase):
    pass


class Parent(Base):
    __tablename__ = "compat_parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    children: Mapped[list[Child]] = relationship(back_populates="parent",
                                                 cascade="all, delete-orphan")


class Child(Base):
    __tablename__ = "compat_children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("compat_parents.id"))
    parent: Mapped[Parent | None] = relationship(back_populates="children")


@pytest.fixture
def session(sqlite_url: Any) -> Iterator[Session]:
    engine = make_engine(sqlite_url)
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Parent(id=1, name="ada", children=[Child(id=10)]))
        s.commit()
        yield s
    engine.dispose()


def _parameters(function: Any) -> dict[str, pyinspect.Parameter]:
    # The wrappers in _compat may already be installed: look through them.
    return dict(pyinspect.signature(pyinspect.unwrap(function)).parameters)


def test_identity_lookup_hooks_exist_with_the_arguments_the_wrappers_read() -> None:
    originals = _compat.original_identity_lookups()
    get_impl = _parameters(originals["_get_impl"])
    assert "identity_token" in get_impl and "options" in get_impl, (
        f"{WHO}: Session._get_impl no longer takes identity_token/options keywords; "
        "as-of get() cannot be routed to its slice")
    lookup = _parameters(originals["_identity_lookup"])
    names = list(lookup)
    assert names[1:4] == ["mapper", "primary_key_identity", "identity_token"], (
        f"{WHO}: Session._identity_lookup's leading arguments changed: {names}")
    assert "lazy_loaded_from" in lookup, (
        f"{WHO}: Session._identity_lookup no longer gets lazy_loaded_from; lazy loads "
        "from an as-of object would return current objects")


def test_identity_lookup_wrappers_are_installed_and_pass_calls_through(
        session: Session) -> None:
    from temporal import hooks

    hooks.install()  # as the first temporal model does
    assert Session._get_impl is not _compat.original_identity_lookups()["_get_impl"]
    parent = session.get(Parent, 1)
    assert parent is not None and session.get(Parent, 1) is parent  # the identity map
    child = session.get(Child, 10)
    assert child is not None and child.parent is parent  # a lazy many-to-one lookup


def test_update_values_reads_the_set_clause_in_order() -> None:
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True),
                  Column("a", Integer), Column("b", String))
    pairs = _compat.update_values(update(table).values(a=1, b="x"))
    assert [(getattr(k, "key", k), v.value) for k, v in pairs] == [("a", 1), ("b", "x")], (
        f"{WHO}: update().values() is no longer kept in _values as target -> bind")
    assert all(isinstance(v, BindParameter) for _, v in pairs)
    ordered = _compat.update_values(update(table).ordered_values((table.c.b, "y"),
                                                                 (table.c.a, 2)))
    assert [(getattr(k, "key", k), v.value) for k, v in ordered] == [("b", "y"), ("a", 2)], (
        f"{WHO}: update().ordered_values() is no longer kept in _ordered_values")
    expression = _compat.update_values(update(table).values(a=table.c.a + 1))
    assert len(expression) == 1 and not isinstance(expression[0][1], BindParameter)
    assert _compat.update_values(update(table)) == []


def test_returning_and_insert_shapes_are_visible() -> None:
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("a", Integer))
    assert _compat.has_returning(update(table).values(a=1).returning(table.c.id))
    assert not _compat.has_returning(update(table).values(a=1))
    assert _compat.insert_has_values(insert(table).values(a=1))
    assert _compat.insert_has_values(insert(table).values([{"a": 1}, {"a": 2}]))
    assert not _compat.insert_has_values(insert(table))
    assert _compat.insert_is_from_select(insert(table).from_select(["a"], select(table.c.a)))
    assert not _compat.insert_is_from_select(insert(table).values(a=1))


def test_is_orphan_asks_the_mapper(session: Session) -> None:
    parent = session.get(Parent, 1)
    assert parent is not None
    child = parent.children[0]
    mapper = sa_inspect(Child)
    assert not _compat.is_orphan(mapper, sa_inspect(child))
    parent.children.remove(child)
    assert _compat.is_orphan(mapper, sa_inspect(child)), (
        f"{WHO}: Mapper._is_orphan no longer reports a child removed from its parent")


def test_modified_attributes_gives_the_value_before_the_change(session: Session) -> None:
    parent = session.get(Parent, 1)
    assert parent is not None
    parent.name = "grace"
    assert _compat.modified_attributes(sa_inspect(parent)) == [("name", "ada")], (
        f"{WHO}: InstanceState.committed_state no longer holds the loaded value")
    session.expire(parent, ["name"])
    parent.name = "hopper"  # set without being loaded first
    assert _compat.modified_attributes(sa_inspect(parent)) == [("name", _compat.NO_VALUE)]


def test_expire_attributes_unloads_them(session: Session) -> None:
    parent = session.get(Parent, 1)
    assert parent is not None
    state = sa_inspect(parent)
    _compat.expire_attributes(state, ["name"])
    assert "name" in state.unloaded and "name" not in state.dict, (
        f"{WHO}: InstanceState._expire_attributes no longer unloads an attribute")
    assert parent.name == "ada"  # loads again from the database


def test_mark_deleted_moves_objects_as_a_flushed_delete_would(session: Session) -> None:
    parent = session.get(Parent, 1)
    assert parent is not None
    session.begin_nested()
    _compat.mark_deleted(session, [sa_inspect(parent)])
    state = sa_inspect(parent)
    assert state.deleted and parent not in session, (
        f"{WHO}: Session._remove_newly_deleted no longer moves objects to 'deleted'")
    assert session.identity_map.get(state.key) is None  # type: ignore[arg-type]
    session.rollback()  # the savepoint: the object comes back
    assert state.persistent and session.get(Parent, 1) is parent
    _compat.mark_deleted(session, [state])
    session.commit()
    assert state.detached


_PROBE = """
import sqlalchemy
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
import temporal

def hooked():
    session, engine = Session(), create_engine("sqlite://")
    return {"do_orm_execute": len(session.dispatch.do_orm_execute),
            "before_flush": len(session.dispatch.before_flush),
            "rollback_savepoint": len(engine.dispatch.rollback_savepoint),
            "commit": len(engine.dispatch.commit),
            "get wrapped": Session._get_impl.__module__ != "sqlalchemy.orm.session"}

print(hooked())
class Base(DeclarativeBase):
    pass
class Plain(Base):
    __tablename__ = "plain"
    id: Mapped[int] = mapped_column(primary_key=True)
print(hooked())
class Versioned(temporal.Temporal, Base):
    __tablename__ = "versioned"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
print(hooked())
"""


def test_importing_temporal_hooks_nothing_until_a_temporal_model_exists() -> None:
    """Session listeners (and the identity-lookup wrappers) arrive with the first
    temporal table: a process of plain models that imported temporal runs exactly
    SQLAlchemy's own code on every statement and flush. Engines never get connection
    listeners (those follow the connections that write versions), so even beside
    temporal models plain statements keep SQLAlchemy's event-free execution path."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          check=True)
    before, plain, after = done.stdout.strip().splitlines()
    nothing = {"do_orm_execute": 0, "before_flush": 0, "rollback_savepoint": 0,
               "commit": 0, "get wrapped": False}
    assert before == plain == repr(nothing)
    # One do_orm_execute listener serves reads and bulk statements alike.
    assert after == repr({"do_orm_execute": 1, "before_flush": 1, "rollback_savepoint": 0,
                          "commit": 0, "get wrapped": True})


_ALEMBIC_PROBE = """
import sys
import temporal
print("alembic" in sys.modules, "mako" in sys.modules)
from alembic.operations import Operations
print(all(hasattr(Operations, name) for name in
          ("make_temporal", "make_plain", "add_temporal_column", "drop_temporal_column",
           "set_temporal_ttl")))
"""


def test_importing_temporal_leaves_alembic_unimported_and_still_registers_its_operations(
) -> None:
    """``import temporal`` does not import Alembic (with Mako and Pygments, ~20,000
    objects every full garbage collection of a plain workload would walk); the
    operations arrive the moment Alembic's operations module is imported, whichever
    comes first."""
    done = subprocess.run([sys.executable, "-c", _ALEMBIC_PROBE], capture_output=True,
                          text=True, check=True)
    assert done.stdout.split() == ["False", "False", "True"]
    first = subprocess.run(
        [sys.executable, "-c", "from alembic.operations import Operations\nimport temporal\n"
         "print(hasattr(Operations, 'make_temporal'))"],
        capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "True"
    # The wrapped loader is invisible: the module is Alembic's, its source readable.
    source = subprocess.run(
        [sys.executable, "-c", "import inspect, temporal, alembic.operations as o\n"
         "print(len(inspect.getsource(o)) > 0, o.__spec__.name)"],
        capture_output=True, text=True, check=True)
    assert source.stdout.split() == ["True", "alembic.operations"]


def test_a_mere_lookup_of_alembic_does_not_use_up_the_registration() -> None:
    """A finder asked for ``alembic.operations`` without the module being executed
    (a lookup: is it installed, where is it?) leaves the hook in place; the
    operations still arrive with the real import."""
    done = subprocess.run(
        [sys.executable, "-c", "import importlib.util, sys, temporal\n"
         "where = importlib.util.find_spec('alembic').submodule_search_locations\n"
         "for finder in list(sys.meta_path):\n"
         "    if hasattr(finder, 'find_spec'):\n"
         "        finder.find_spec('alembic.operations', where)\n"
         "print('alembic.operations' in sys.modules)\n"
         "from alembic import op\n"
         "from alembic.operations import Operations\n"
         "print(hasattr(Operations, 'make_temporal'))"],
        capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]

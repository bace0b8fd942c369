"""The same ORM code on a plain model and on a temporal one gives the same current state.

Each test runs once with a plain model and once with the identical model plus the
``Temporal`` mixin, on both backends, and compares what the application sees.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, Integer, String, delete, select, update
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

from temporal import Temporal


def make_model(temporal: bool, **columns: Any) -> Any:
    """A fresh declarative ``Item`` (id, name, qty, plus ``columns``), plain or temporal."""

    class Base(DeclarativeBase):
        pass

    namespace: dict[str, Any] = {
        "__tablename__": "items",
        "id": mapped_column(Integer, primary_key=True),
        "name": mapped_column(String(50)),
        "qty": mapped_column(Integer, default=0),
        **columns,
    }
    bases = (Temporal, Base) if temporal else (Base,)
    return type("Item", bases, namespace)


@pytest.fixture(params=["plain", "temporal"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def item(engine: Engine, kind: str) -> Iterator[Any]:
    model = make_model(kind == "temporal")
    model.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([model(id=i, name=f"n{i}", qty=i) for i in (1, 2, 3)])
    yield model
    model.metadata.drop_all(engine)


def current(engine: Engine, model: Any) -> list[tuple[int, str, int]]:
    with Session(engine) as s:
        return [tuple(r) for r in s.execute(  # type: ignore[misc]
            select(model.id, model.name, model.qty).order_by(model.id))]


def test_a_bulk_update_flushes_pending_changes_first(engine: Engine, item: Any) -> None:
    with Session(engine) as s:
        s.get(item, 1).name = "x"
        s.execute(update(item).where(item.id == 2).values(qty=20))
        s.commit()
    assert current(engine, item) == [(1, "x", 1), (2, "n2", 20), (3, "n3", 3)]


def test_a_bulk_update_sees_a_pending_change_it_matches(engine: Engine, item: Any) -> None:
    with Session(engine) as s:
        s.get(item, 3).qty = 30
        s.execute(update(item).where(item.qty >= 30).values(name="big"))
        s.commit()
    assert current(engine, item) == [(1, "n1", 1), (2, "n2", 2), (3, "big", 30)]


def test_a_bulk_delete_takes_pending_inserts_with_it(engine: Engine, item: Any) -> None:
    with Session(engine) as s:
        s.add(item(id=4, name="new", qty=4))
        s.execute(delete(item).where(item.qty >= 3))
        s.commit()
    assert current(engine, item) == [(1, "n1", 1), (2, "n2", 2)]


def test_no_autoflush_keeps_pending_changes_pending(engine: Engine, item: Any) -> None:
    with Session(engine) as s:
        with s.no_autoflush:
            s.get(item, 1).name = "later"
            s.execute(update(item).where(item.name == "later").values(qty=99))
        s.commit()
    assert current(engine, item)[0] == (1, "later", 1)  # the UPDATE saw no "later" row


def test_a_rolled_back_savepoint_leaves_no_ghost_write(engine: Engine, item: Any) -> None:
    with Session(engine) as s:
        s.get(item, 1)
        with pytest.raises(sa.exc.IntegrityError), s.begin_nested():
            s.get(item, 1).name = "ghost"
            s.add(item(id=2, name="duplicate key"))  # fails the flush after the update
            s.flush()
        s.get(item, 3).name = "unrelated"
        s.commit()
    assert current(engine, item) == [(1, "n1", 1), (2, "n2", 2), (3, "unrelated", 3)]


def test_a_released_savepoint_keeps_its_changes(engine: Engine, item: Any) -> None:
    with Session(engine) as s:
        with s.begin_nested():
            s.get(item, 1).name = "kept"
        savepoint = s.begin_nested()
        s.get(item, 2).name = "dropped"
        s.flush()
        savepoint.rollback()
        s.commit()
    assert current(engine, item) == [(1, "kept", 1), (2, "n2", 2), (3, "n3", 3)]


# -- column types, defaults and onupdate on every write path -------------------------


class Lower(sa.TypeDecorator[str]):
    """A TypeDecorator whose bind processing must run on every path."""

    impl = String(50)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else value.lower()


class Color(enum.Enum):
    red = "red"
    blue = "blue"


def typed_columns(backend: str) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "data": mapped_column(sa.JSON, nullable=True),
        "color": mapped_column(sa.Enum(Color), nullable=True),
        "code": mapped_column(Lower, nullable=True),
        "wait": mapped_column(sa.Interval, nullable=True),
        "flag": mapped_column(sa.Boolean, nullable=True),
        "note": mapped_column(String(20), default="made", onupdate=lambda: "edited"),
        "changed_at": mapped_column(sa.DateTime(timezone=True), nullable=True,
                                    onupdate=sa.func.now()),
    }
    if backend == "postgresql":
        columns["tags"] = mapped_column(sa.ARRAY(Integer), nullable=True)
    return columns


def run_typed_writes(engine: Engine, model: Any) -> list[dict[str, Any]]:
    """Every write path with typed values; returns the current rows, comparable across runs."""
    has_tags = "tags" in model.__table__.c
    model.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([model(id=i, name=f"n{i}", flag=True) for i in (1, 2, 3)])
    with Session(engine) as s, s.begin():  # unit of work
        one = s.get(model, 1)
        one.data, one.color, one.code = {"a": 1, "b": [1, 2]}, Color.blue, "ABC"
        one.wait, one.flag = timedelta(hours=1), None
        if has_tags:
            one.tags = [1, 2]
    with Session(engine) as s, s.begin():  # a bulk update with a WHERE clause
        s.execute(update(model).where(model.id == 2).values(
            data={"k": {"nested": True}}, color=Color.red, code="XyZ",
            wait=timedelta(days=2), flag=None, **({"tags": [3]} if has_tags else {})))
    with Session(engine) as s, s.begin():  # a bulk update by key
        s.execute(update(model), [{"id": 3, "data": {"x": None}, "color": Color.blue,
                                   "code": "QQ", "flag": None,
                                   **({"tags": [4, 5]} if has_tags else {})}])
    with Session(engine) as s, s.begin():  # a bulk insert
        s.execute(sa.insert(model), [{"id": 4, "name": "n4", "data": [1, "two"],
                                      "color": Color.red, "code": "MiXeD",
                                      "wait": timedelta(seconds=5)}])
    with Session(engine) as s:
        rows = []
        for obj in s.scalars(select(model).order_by(model.id)):
            row = {c: getattr(obj, c) for c in ("id", "data", "color", "code", "wait", "flag",
                                                "note")}
            row["changed_at"] = obj.changed_at is not None
            if has_tags:
                row["tags"] = obj.tags
            rows.append(row)
    model.metadata.drop_all(engine)
    return rows


def test_types_defaults_and_onupdate_behave_as_on_a_plain_model(engine: Engine) -> None:
    backend = engine.dialect.name
    plain = run_typed_writes(engine, make_model(False, **typed_columns(backend)))
    temporal = run_typed_writes(engine, make_model(True, **typed_columns(backend)))
    assert temporal == plain
    assert [(r["code"], r["note"], r["changed_at"]) for r in temporal] == [
        ("abc", "edited", True), ("xyz", "edited", True), ("qq", "edited", True),
        ("mixed", "made", False)]
    assert temporal[1]["data"] == {"k": {"nested": True}} and temporal[1]["flag"] is None

"""A temporal model's own indexes: partial over current rows, with a full twin for history."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, Index, String, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import Temporal, as_of, catalog, transaction_time, triggers


class Base(DeclarativeBase):
    pass


class Reading(Temporal, Base):
    __tablename__ = "readings"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    level: Mapped[int] = mapped_column(index=True)
    site: Mapped[str] = mapped_column(String(20))
    __table_args__ = (Index("by_site_level", "site", "level"),)


class Flat(Base):
    __tablename__ = "flat_readings"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    level: Mapped[int] = mapped_column(index=True)


ROWS, ROUNDS = 200, 5


@pytest.fixture
def db(engine: Engine) -> Iterator[tuple[Engine, list[datetime]]]:
    """Readings 0..199 with level == id, then ROUNDS bulk updates moving every level up
    by 1000; the moment of each state."""
    Base.metadata.create_all(engine)
    moments = []
    with Session(engine) as s, s.begin():
        s.add_all([Reading(id=i, level=i, site="north" if i % 2 else "south")
                   for i in range(ROWS)])
        s.add_all([Flat(id=i, level=i) for i in range(ROWS)])
    for _ in range(ROUNDS):
        with Session(engine) as s, s.begin():
            moments.append(transaction_time(s) - timedelta(microseconds=1))
            s.execute(update(Reading).values(level=Reading.level + 1000))
    moments.append(datetime.now(timezone.utc))
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    yield engine, moments
    Base.metadata.drop_all(engine)


def _indexes(engine: Engine) -> dict[str, tuple[list[Any], bool]]:
    """name -> (columns, partial over current rows)."""
    with engine.connect() as conn:
        found = sa.inspect(conn).get_indexes("readings")
    out = {}
    for ix in found:
        options = ix.get("dialect_options") or {}
        where = options.get("postgresql_where") or options.get("sqlite_where")
        out[ix["name"]] = (list(ix["column_names"]),
                           where is not None and "expired_at is null" in str(where).lower())
    return out


def _levels(engine: Engine, low: int, high: int, at: datetime | None = None) -> list[int]:
    options = [as_of(at)] if at is not None else []
    with Session(engine) as s:
        return sorted(r.level for r in s.scalars(
            select(Reading).where(Reading.level.between(low, high)).options(*options)))


def test_declared_indexes_cover_current_rows_and_a_twin_covers_history(
        db: tuple[Engine, list[datetime]]) -> None:
    engine, moments = db
    indexes = _indexes(engine)
    assert indexes["ix_readings_level"] == (["level"], True)
    assert indexes["ix_readings_level_history"] == (["level"], False)
    assert indexes["by_site_level"] == (["site", "level"], True)
    assert indexes["by_site_level_history"] == (["site", "level"], False)
    # Reads through either index give what the versions say: now, and at each moment.
    top = ROUNDS * 1000
    assert _levels(engine, top, top + 9) == list(range(top, top + 10))
    assert _levels(engine, 0, 9) == []
    for n, moment in enumerate(moments[:-1]):
        assert _levels(engine, n * 1000, n * 1000 + 9, at=moment) == \
            list(range(n * 1000, n * 1000 + 10))


@pytest.mark.postgres
def test_current_reads_use_the_partial_index_and_as_of_reads_the_history_twin(
        pg_engine: Engine) -> None:
    Base.metadata.create_all(pg_engine)
    # 100 closed versions of each row, then the current one: forged, past the triggers
    with pg_engine.begin() as conn, triggers.maintenance(conn):
        conn.execute(text(
            "INSERT INTO readings SELECT g % 2000, g, 'x', "
            "'2026-01-01'::timestamptz + (g / 2000) * interval '1 second', "
            "'2026-01-01'::timestamptz + (g / 2000 + 1) * interval '1 second' "
            "FROM generate_series(0, 199999) g"))
        conn.execute(text(
            "INSERT INTO readings SELECT g, g, 'x', '2026-01-01'::timestamptz "
            "+ interval '100 seconds', NULL FROM generate_series(0, 1999) g"))
        conn.execute(text("ANALYZE readings"))

    def plan(statement: Any) -> str:
        with pg_engine.connect() as conn:
            compiled = statement.compile(pg_engine, compile_kwargs={"literal_binds": True})
            return "\n".join(conn.exec_driver_sql(f"EXPLAIN {compiled}").scalars())

    current = select(Reading.__table__).where(Reading.__table__.c.level.between(10, 40),
                                              Reading.__table__.c.expired_at.is_(None))
    assert "ix_readings_level " in plan(current) + " "
    assert "ix_readings_level_history" not in plan(current)
    with Session(pg_engine) as s:
        at = datetime(2026, 1, 1, 0, 0, 50, tzinfo=timezone.utc)
        statement = select(Reading).where(Reading.level.between(100_000, 100_030)) \
            .options(as_of(at))
        found = s.scalars(statement).all()
        assert len(found) == 31 and {r.created_at for r in found} == {at}
    with pg_engine.connect() as conn:
        as_of_plan = "\n".join(conn.exec_driver_sql(
            "EXPLAIN SELECT * FROM readings WHERE level BETWEEN 100000 AND 100030 "
            "AND created_at <= '2026-01-01 00:00:50+00' AND (expired_at IS NULL "
            "OR expired_at > '2026-01-01 00:00:50+00')").scalars())
    assert "ix_readings_level_history" in as_of_plan
    Base.metadata.drop_all(pg_engine)


def test_db_upgrade_splits_the_full_indexes_of_existing_tables(
        db: tuple[Engine, list[datetime]]) -> None:
    engine, moments = db
    catalog.upgrade(engine)
    catalog.downgrade(engine, "0003")  # the shape tables had before revision 0004
    before = _indexes(engine)
    assert before["ix_readings_level"] == (["level"], False)
    assert "ix_readings_level_history" not in before and "by_site_level_history" not in before
    assert before["readings_current"] == (["id"], True)  # temporal's own: untouched
    catalog.upgrade(engine)
    after = _indexes(engine)
    assert after["ix_readings_level"] == (["level"], True)
    assert after["ix_readings_level_history"] == (["level"], False)
    assert after["by_site_level"] == (["site", "level"], True)
    assert after["by_site_level_history"] == (["site", "level"], False)
    assert set(after) == set(before) | {"ix_readings_level_history", "by_site_level_history"}
    with engine.connect() as conn:  # Flat is a plain table: never touched
        assert [ix["name"] for ix in sa.inspect(conn).get_indexes("flat_readings")] == \
            ["ix_flat_readings_level"]
    top = ROUNDS * 1000
    assert _levels(engine, top, top + 9) == list(range(top, top + 10))
    assert _levels(engine, 1000, 1009, at=moments[1]) == list(range(1000, 1010))



def test_make_temporal_splits_a_plain_index_and_make_plain_restores_it(engine: Engine) -> None:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    md = sa.MetaData()
    sa.Table("gauges", md, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("level", sa.Integer, index=True))
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO gauges (id, level) VALUES (1, 10), (2, 20)"))

    def shape() -> dict[str, tuple[list[Any], bool]]:
        with engine.connect() as conn:
            found = sa.inspect(conn).get_indexes("gauges")
        return {ix["name"]: (list(ix["column_names"]), "expired_at is null" in str(
            (ix.get("dialect_options") or {}).get("postgresql_where")
            or (ix.get("dialect_options") or {}).get("sqlite_where")).lower())
            for ix in found if ix["name"] in ("ix_gauges_level", "ix_gauges_level_history")}

    with engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).make_temporal("gauges")
    assert shape() == {"ix_gauges_level": (["level"], True),
                       "ix_gauges_level_history": (["level"], False)}
    with engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).make_plain("gauges")
    assert shape() == {"ix_gauges_level": (["level"], False)}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM gauges WHERE level = 20")).scalar() == 2

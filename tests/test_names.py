"""Long table names: every object the library makes stays within PostgreSQL's 63 bytes,
distinct and findable; a name whose ``<table>_archive`` would be cut is refused."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, String, inspect, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import (
    Temporal,
    UnsupportedError,
    archive,
    export,
    history,
    transaction_time,
    triggers,
    verify,
)
from temporal.names import MAX_BYTES, derived

LONGEST = "t" * 44 + "_customers"  # 54 bytes: with _archive, 62
TWIN = "t" * 44 + "_customerz"  # the same first 53 bytes


def models(name: str, twin: str | None = None) -> tuple[type[DeclarativeBase], list[type]]:
    class Base(DeclarativeBase):
        pass

    made = []
    for table in [name] + ([twin] if twin else []):
        made.append(type(f"M{len(made)}", (Temporal, Base), {
            "__tablename__": table,
            "__temporal_ttl__": timedelta(microseconds=1),
            "__annotations__": {"id": Mapped[int], "name": Mapped[str],
                                "ref": Mapped[int | None]},
            "id": mapped_column(primary_key=True),
            "name": mapped_column(String(20)),
            "ref": mapped_column(index=True),  # gets a <index>_history twin
        }))
    return Base, made


def test_derived_names_fit_and_stay_distinct() -> None:
    assert derived("orders", "_versioned_update") == "orders_versioned_update"
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    for suffix in ("_versioned_update_copy", "_no_overlap_insert", "_history", ""):
        a, b = derived(long_a, suffix), derived(long_b, suffix)
        assert len(a.encode()) <= MAX_BYTES and a.endswith(suffix) and a != b
        assert derived(long_a, suffix) == a  # the same every time
    wide = "é" * 40  # two bytes each: the cut never splits a character
    assert derived(wide, "_versioned_delete_copy").encode().decode() \
        .endswith("_versioned_delete_copy")
    assert derived("x" * 60, "", "temporal_keys_").startswith("temporal_keys_")


@pytest.mark.postgres
def test_the_longest_table_name_works_end_to_end(pg_engine: Engine, tmp_path: Path) -> None:
    """Create, version through the ORM and raw SQL, guard, upgrade, archive, export,
    make plain: with a table name whose archive name is 62 bytes, beside a twin that
    differs only in its last byte."""
    base, (model, twin) = models(LONGEST, TWIN)
    base.metadata.create_all(pg_engine)
    with pg_engine.connect() as conn:
        made = conn.execute(text(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
            "AND tgrelid = to_regclass(:t)"), {"t": LONGEST}).scalars().all()
        theirs = conn.execute(text(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
            "AND tgrelid = to_regclass(:t)"), {"t": TWIN}).scalars().all()
    assert len(made) == len(set(made)) >= 10 and not set(made) & set(theirs)
    assert all(len(n.encode()) <= MAX_BYTES for n in made)

    with Session(pg_engine) as s, s.begin():
        s.add(model(id=1, name="a", ref=7))
        s.add(twin(id=1, name="twin"))
    with Session(pg_engine) as s, s.begin():
        s.get(model, 1).name = "b"
        moment = transaction_time(s)
    with pg_engine.begin() as conn:  # a raw writer, versioned by the triggers
        conn.execute(text(f"UPDATE {LONGEST} SET name = 'raw' WHERE id = 1"))
    with Session(pg_engine) as s:
        assert [v.name for v in history(s, model, 1)] == ["a", "b", "raw"]
        assert [v.name for v in history(s, twin, 1)] == ["twin"]

    url = pg_engine.url.render_as_string(hide_password=False)
    status = subprocess.run([sys.executable, "-m", "temporal", "db", "upgrade", "--url", url],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    with pg_engine.connect() as conn:  # nothing reinstalled twice
        again = conn.execute(text(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
            "AND tgrelid = to_regclass(:t)"), {"t": LONGEST}).scalars().all()
    assert sorted(again) == sorted(made)

    export(pg_engine, tmp_path / "x", as_of=moment, tables=[LONGEST, TWIN])
    summary = archive(pg_engine, ttl=timedelta(microseconds=1))
    with pg_engine.connect() as conn:
        archived = conn.execute(text(f"SELECT count(*) FROM ONLY {LONGEST}_archive")).scalar()
    assert archived == 2, summary
    assert verify(tmp_path / "x", pg_engine).ok  # archived versions still export the same
    with Session(pg_engine) as s:
        assert [v.name for v in history(s, model, 1)] == ["a", "b", "raw"]

    with pg_engine.begin() as conn:
        triggers.remove(conn, LONGEST)
        left = conn.execute(text(
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE '%versioned%'"
            " AND tgrelid IN (to_regclass(:t), to_regclass(:a))"),
            {"t": LONGEST, "a": f"{LONGEST}_archive"}).scalar()
    assert left == 0


@pytest.mark.postgres
def test_an_earlier_versions_cut_trigger_names_are_dropped_on_reinstall(
        pg_engine: Engine) -> None:
    """Earlier versions named a long table's copy triggers past 63 bytes, which
    PostgreSQL cut: reinstalling drops those too, so no write is versioned twice."""
    base, (model,) = models("q" * 44)
    base.metadata.create_all(pg_engine)
    earlier = triggers._earlier_name("q" * 44, "update_copy")
    with pg_engine.begin() as conn:
        conn.execute(text(
            f"CREATE TRIGGER {earlier} AFTER UPDATE ON {'q' * 44} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {triggers._name('q' * 44, 'update_copy')}()"))
        triggers.install(conn, "q" * 44, ["id"])
        assert conn.execute(text("SELECT count(*) FROM pg_trigger WHERE tgname = :n"),
                            {"n": earlier}).scalar() == 0
    with Session(pg_engine) as s, s.begin():
        s.add(model(id=1, name="a"))
    with pg_engine.begin() as conn:
        conn.execute(text(f"UPDATE {'q' * 44} SET name = 'b'"))
    with Session(pg_engine) as s:
        assert [v.name for v in history(s, model, 1)] == ["a", "b"]


@pytest.mark.postgres
def test_a_name_whose_archive_would_be_cut_is_refused(pg_engine: Engine) -> None:
    name = "t" * 56
    base, _ = models(name)
    with pytest.raises(UnsupportedError, match="at most 55 bytes"):
        base.metadata.create_all(pg_engine)
    assert not inspect(pg_engine).has_table(name)


def test_sqlite_takes_long_names(sqlite_url: object) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(sqlite_url)  # type: ignore[call-overload]
    name = "s" * 80
    base, (model,) = models(name)
    base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add(model(id=1, name="a"))
    with Session(engine) as s, s.begin():
        s.execute(update(model).values(name="b"))
    archive(engine, ttl=timedelta(microseconds=1))
    with Session(engine) as s:
        assert [v.name for v in history(s, model, 1)] == ["a", "b"]
    engine.dispose()

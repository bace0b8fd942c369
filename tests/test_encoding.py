"""Exact types in exports: every SQL type, hostile values, every format, every path.

A table with every portable type (and, on PostgreSQL, intervals, arrays, reals
and jsonb) holds the values that broke earlier exports: NaN, infinities, -0.0,
1e23, 5e-324, 2^63-1, NULL beside "" beside "NA", JSON null beside SQL NULL,
1 beside "1", an object beside its text, control characters, pre-1900 and
year-9999 instants. Each format is read back by ``load()`` and compared value
by value with the database's own as-of values; the digest is the same in every
format, on the COPY and the general path, and on both backends.
"""

from __future__ import annotations

import decimal
import json
import math
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    Engine,
    LargeBinary,
    Numeric,
    Text,
    Time,
    Uuid,
    null,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import Temporal, export, load, transaction_time, verify
from temporal.clock import UTC
from temporal.encoding import ColumnType, canonical, encoder
from temporal.export import ExportPlan, run_export
from temporal.manifest import read_manifest
from temporal.types import UTCDateTime

FORMATS = ["csv", "jsonl", "parquet"]


class EveryBase(DeclarativeBase):
    pass


class Every(Temporal, EveryBase):
    """One column of each portable type."""

    __tablename__ = "every"
    id: Mapped[int] = mapped_column(primary_key=True)
    big: Mapped[int | None] = mapped_column(BigInteger)
    x: Mapped[float | None] = mapped_column(Double)
    amount: Mapped[decimal.Decimal | None] = mapped_column(Numeric(38, 10))
    label: Mapped[str | None] = mapped_column(Text)
    flag: Mapped[bool | None] = mapped_column(Boolean)
    seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    local: Mapped[datetime | None] = mapped_column(DateTime)
    day: Mapped[date | None] = mapped_column(Date)
    at: Mapped[time | None] = mapped_column(Time)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    doc: Mapped[Any] = mapped_column(JSON, nullable=True)


class FastBase(DeclarativeBase):
    pass


class FastEvery(Temporal, FastBase):
    """The portable types whose canonical text SQLite renders itself (no decimal)."""

    __tablename__ = "every_fast"
    id: Mapped[int] = mapped_column(primary_key=True)
    big: Mapped[int | None] = mapped_column(BigInteger)
    x: Mapped[float | None] = mapped_column(Double)
    label: Mapped[str | None] = mapped_column(Text)
    flag: Mapped[bool | None] = mapped_column(Boolean)
    seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    local: Mapped[datetime | None] = mapped_column(DateTime)
    day: Mapped[date | None] = mapped_column(Date)
    at: Mapped[time | None] = mapped_column(Time)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    doc: Mapped[Any] = mapped_column(JSON, nullable=True)


class PgBase(DeclarativeBase):
    pass


class PgEvery(Temporal, PgBase):
    """PostgreSQL's own types on top."""

    __tablename__ = "pg_every"
    id: Mapped[int] = mapped_column(primary_key=True)
    span: Mapped[timedelta | None] = mapped_column(postgresql.INTERVAL)
    ints: Mapped[list[int | None] | None] = mapped_column(postgresql.ARRAY(BigInteger))
    words: Mapped[list[str | None] | None] = mapped_column(postgresql.ARRAY(Text))
    small: Mapped[float | None] = mapped_column(postgresql.REAL)
    doc: Mapped[Any] = mapped_column(postgresql.JSONB, nullable=True)
    x: Mapped[float | None] = mapped_column(Double)
    amount: Mapped[decimal.Decimal | None] = mapped_column(Numeric(38, 10))


TEXTS = ["", "NA", "null", "1", 'q"u\\ote', "new\nline\r\ttab\x01ctl", "ünï 😀", None]
FLOATS = [math.inf, -math.inf, 1e16, 1e23, 5e-324, 0.1 + 0.2, 1.7976931348623157e308, None]
DOCS: list[Any] = [{"b": [1, 2.5, None], "a": "x"}, '{"a":1}', 1, "1", JSON.NULL, null(), [],
                   True]


def portable_rows() -> list[dict[str, Any]]:
    """Values every backend stores exactly (SQLite has no NaN and no -0.0)."""
    rows = []
    for i in range(8):
        rows.append({
            "id": i + 1,
            "big": [2**63 - 1, -(2**63), 0, None, 7, 1, -1, 42][i],
            "x": FLOATS[i],
            "amount": [decimal.Decimal("1.5"), decimal.Decimal("-0.0000000001"), None,
                       decimal.Decimal("0"), decimal.Decimal("123456.789"),
                       decimal.Decimal("-2"), decimal.Decimal("0.25"), None][i],
            "label": TEXTS[i],
            "flag": [True, False, None][i % 3],
            "seen": [datetime(1850, 1, 1, tzinfo=UTC),
                     datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                     datetime(999, 3, 4, 5, 6, 7, 8, tzinfo=UTC), None,
                     datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
                     datetime(1970, 1, 1, tzinfo=UTC),
                     datetime(2000, 2, 29, 0, 0, 0, 1, tzinfo=UTC),
                     datetime(1, 1, 1, tzinfo=UTC)][i],
            "local": [datetime(1899, 12, 31, 23, 59, 59), None, datetime(9999, 12, 31),
                      datetime(2026, 1, 2, 3, 4, 5, 6), datetime(1000, 1, 1), None,
                      datetime(2026, 1, 1), datetime(1950, 6, 1, 0, 0, 0, 500000)][i],
            "day": [date(1, 1, 1), date(999, 12, 31), date(9999, 12, 31), None,
                    date(2026, 2, 28), date(1900, 1, 1), date(2000, 1, 1), date(1970, 1, 1)][i],
            "at": [time(0, 0), time(23, 59, 59, 999999), time(3, 4, 5, 600000), None,
                   time(12, 0), time(0, 0, 0, 1), time(1, 2, 3), time(4, 5, 6)][i],
            "blob": [b"", b"\x00\xff", None, b"abc", b"\n\"", b"\x80", b"z", b""][i],
            "token": [uuid.UUID(int=i * 2**100 + 7), None][i % 2],
            "doc": DOCS[i],
        })
    return rows


def fill(engine: Engine, model: type, rows: list[dict[str, Any]]) -> datetime:
    model.metadata.create_all(engine)  # type: ignore[attr-defined]
    with Session(engine) as s, s.begin():
        s.add_all([model(**row) for row in rows])
        moment = transaction_time(s)
    return moment + timedelta(microseconds=1)


def database_texts(engine: Engine, model: type, names: list[str], types: list[ColumnType]
                   ) -> list[list[str | None]]:
    """The database's own as-of values (the current rows) as canonical texts, read here
    through the ORM model and a JSON column as text (the driver loses JSON null)."""
    table = model.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # the database's ISO 8601 spelling
            conn.exec_driver_sql("SET IntervalStyle = iso_8601")
        columns = [table.c[n].cast(Text) if t.encoding == "json" or (
            t.encoding == "interval" and engine.dialect.name == "postgresql") else table.c[n]
            for n, t in zip(names, types, strict=True)]
        rows = conn.execute(select(*columns).where(table.c.expired_at.is_(None))
                            .order_by(table.c.id)).all()
    encoders = [encoder(t) for t in types]
    return [[e(v) for e, v in zip(encoders, row, strict=True)] for row in rows]


def schema_of(manifest_dir: Path, table: str) -> tuple[list[str], list[ColumnType]]:
    schema = read_manifest(manifest_dir).schema[table]
    return [c["name"] for c in schema], [ColumnType.from_manifest(c) for c in schema]


def frame_texts(frame: Any, types: list[ColumnType]) -> list[list[str | None]]:
    """A loaded pandas DataFrame's values as canonical texts."""
    import pandas as pd

    columns = []
    for name, column in zip(frame.columns, types, strict=True):
        encode = encoder(column)
        values = []
        for v in frame[name].tolist():
            if v is None or v is pd.NA or v is pd.NaT or (
                    column.encoding != "float" and isinstance(v, float) and math.isnan(v)):
                values.append(None)
                continue
            if hasattr(v, "to_pydatetime"):
                v = v.to_pydatetime()
            values.append(encode(v))
        columns.append(values)
    return [list(r) for r in zip(*columns, strict=True)]


@pytest.fixture
def every(engine: Engine) -> Iterator[tuple[Engine, datetime]]:
    yield engine, fill(engine, Every, portable_rows())


@pytest.mark.filterwarnings("ignore:Dialect sqlite")
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_type_comes_back_exactly(every: tuple[Engine, datetime], tmp_path: Path,
                                       fmt: str) -> None:
    engine, at = every
    export(engine, tmp_path / fmt, as_of=at, tables=["every"], format=fmt)
    names, types = schema_of(tmp_path / fmt, "every")
    assert [t.encoding for t in types] == [
        "integer", "integer", "float", "decimal", "text", "boolean", "timestamp_utc",
        "timestamp", "date", "time", "bytes", "uuid", "json"]
    expected = database_texts(engine, Every, names, types)
    table = load(tmp_path / fmt, as_="pyarrow")
    assert [str(f.type) for f in table.schema] == [t.arrow for t in types]
    assert str(table.schema.field("amount").type) == "decimal128(38, 10)"
    got = [[encoder(t)(v) for t, v in zip(types, row.values(), strict=True)]
           for row in table.to_pylist()]
    assert got == expected
    report = verify(tmp_path / fmt, engine)
    assert report.ok, report.problems
    frame = load(tmp_path / fmt)
    assert str(frame["big"].dtype) == "Int64" and frame["big"][0] == 2**63 - 1
    assert frame["amount"][1] == decimal.Decimal("-0.0000000001")
    assert str(frame["seen"].dtype) == "datetime64[us, UTC]"
    assert frame["token"][0] == uuid.UUID(int=7)
    assert frame_texts(frame, types) == expected
    docs = [row[12] for row in expected]
    assert docs == ['{"a":"x","b":[1,2.5,null]}', '"{\\"a\\":1}"', "1", '"1"', "null", None,
                    "[]", "true"]


@pytest.mark.filterwarnings("ignore:Dialect sqlite")
def test_the_digest_is_one_for_every_format_and_both_backends(
        sqlite_url: Any, pg_url: Any, tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    digests = {}
    for backend, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
        engine = create_engine(url)
        at = fill(engine, Every, portable_rows())
        for fmt in FORMATS:
            digests[backend, fmt] = export(engine, tmp_path / f"{backend}-{fmt}", as_of=at,
                                           tables=["every"], format=fmt
                                           ).content_digest["table:every"]
        if backend == "postgresql":  # and the general path, not COPY
            plan = ExportPlan(at=at, query=None, fmt="csv", rows_per_file=1000, copy=False)
            digests[backend, "general"] = run_export(
                engine, tmp_path / "general", plan, tables=["every"], name="q", wait=5
            ).content_digest["table:every"]
        engine.dispose()
    assert len(set(digests.values())) == 1, digests
    for fmt in ("csv", "jsonl"):  # the files too, byte for byte
        for a, b in zip(sorted((tmp_path / f"sqlite-{fmt}").rglob("part-*")),
                        sorted((tmp_path / f"postgresql-{fmt}").rglob("part-*")), strict=True):
            assert a.read_bytes() == b.read_bytes()


def test_sqlite_fast_path_writes_the_bytes_of_the_general_path_and_of_postgresql(
        sqlite_url: Any, pg_url: Any, tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    rows = [{k: v for k, v in row.items() if k != "amount"} for row in portable_rows()]
    digests = {}
    for backend, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
        engine = create_engine(url)
        at = fill(engine, FastEvery, rows)
        for copy in (True, False):
            plan = ExportPlan(at=at, query=None, fmt="csv", rows_per_file=3, copy=copy)
            digests[backend, copy] = run_export(
                engine, tmp_path / f"{backend}-{copy}", plan, tables=["every_fast"],
                name="q", wait=5).content_digest["table:every_fast"]
        engine.dispose()
    assert len(set(digests.values())) == 1, digests
    files = {key: sorted((tmp_path / f"{key[0]}-{key[1]}").rglob("part-*")) for key in digests}
    assert len(files["sqlite", True]) == 3
    for key, paths in files.items():
        assert [p.read_bytes() for p in paths] == \
            [p.read_bytes() for p in files["postgresql", True]], key


def pg_rows() -> list[dict[str, Any]]:
    return [
        {"id": 1, "span": timedelta(days=2, hours=3, seconds=4.5), "ints": [1, None, 2**63 - 1],
         "words": ["", None, 'a"b', "ünï"], "small": 0.1, "doc": JSON.NULL, "x": math.nan,
         "amount": decimal.Decimal("1234567890123456789012345678.0123456789")},
        {"id": 2, "span": timedelta(hours=-1), "ints": [], "words": None, "small": -3e38,
         "doc": {"k": "1"}, "x": 1e22, "amount": None},
        {"id": 3, "span": None, "ints": None, "words": ["x"], "small": None, "doc": null(),
         "x": -0.0, "amount": decimal.Decimal("-0.0000000001")},
        {"id": 4, "span": timedelta(0), "ints": [0], "words": [], "small": 1e-45,
         "doc": "1", "x": 8e23, "amount": decimal.Decimal("0")},
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", FORMATS)
def test_postgresql_types_come_back_exactly(pg_engine: Engine, tmp_path: Path,
                                            fmt: str) -> None:
    at = fill(pg_engine, PgEvery, pg_rows())
    with pg_engine.begin() as conn:  # a month is not 30 days: only SQL can write it
        conn.exec_driver_sql("UPDATE pg_every SET span = span + interval '1 mon' WHERE id = 4 "
                             "AND expired_at IS NULL")
    with Session(pg_engine) as s:
        at = max(at, s.scalar(select(PgEvery.created_at).order_by(
            PgEvery.created_at.desc()).limit(1)) + timedelta(microseconds=1))
    manifest = export(pg_engine, tmp_path / fmt, as_of=at, tables=["pg_every"], format=fmt)
    names, types = schema_of(tmp_path / fmt, "pg_every")
    assert [t.encoding for t in types] == ["integer", "interval", "array", "array", "float",
                                           "json", "float", "decimal"]
    expected = database_texts(pg_engine, PgEvery, names, types)
    assert [r[1] for r in expected] == ["P2DT3H4.5S", "P-1DT23H", None, "P1M"]
    assert expected[0][2] == '["1",null,"9223372036854775807"]'
    table = load(tmp_path / fmt, as_="pyarrow")
    assert str(table.schema.field("ints").type) == "list<element: int64>"
    assert table.column("ints").to_pylist()[0] == [1, None, 2**63 - 1]
    got = [[encoder(t)(v) for t, v in zip(types, row.values(), strict=True)]
           for row in table.to_pylist()]
    assert got == expected
    report = verify(tmp_path / fmt, pg_engine)  # digests recomputed from the files too
    assert report.ok, report.problems
    plan = ExportPlan(at=at, query=None, fmt="csv", rows_per_file=1000, copy=False)
    general = run_export(pg_engine, tmp_path / "general", plan, tables=["pg_every"],
                         name="q", wait=5)
    assert general.content_digest == manifest.content_digest


@pytest.mark.postgres
def test_a_query_export_has_the_types_and_digest_of_the_table(
        pg_engine: Engine, tmp_path: Path) -> None:
    at = fill(pg_engine, Every, portable_rows())
    table = export(pg_engine, tmp_path / "t", as_of=at, tables=["every"], format="parquet")
    query = export(pg_engine, tmp_path / "q", as_of=at, query="SELECT * FROM every",
                   name="every", format="parquet")
    assert query.content_digest["table:every"] == table.content_digest["table:every"]
    assert [{k: v for k, v in c.items() if k != "type"} for c in query.schema["every"]] == \
        [{k: v for k, v in c.items() if k != "type"} for c in table.schema["every"]]


def test_canonical_floats_are_python_repr_and_decimals_plain_digits() -> None:
    assert canonical(1e23) == "1e+23" and canonical(-0.0) == "-0.0"
    assert canonical(float("nan")) == "NaN" and canonical(-math.inf) == "-Infinity"
    assert canonical(decimal.Decimal("1E-7")) == "0.0000001"
    assert canonical(datetime(999, 1, 2, tzinfo=UTC)) == "0999-01-02T00:00:00.000000Z"
    assert canonical(time(1, 2, 3)) == "01:02:03.000000"
    assert canonical(timedelta(days=-1, seconds=82800, microseconds=500000)) == \
        "P-1DT23H0.5S"
    assert json.loads(canonical({"b": 1, "a": [None]}) or "") == {"a": [None], "b": 1}


def cli_export(url: str, out: Path, at: datetime, table: str) -> dict[str, Any]:
    """Export through the command line, in a process that never imports the models."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "temporal", "export", "--url", url, "--table", table,
         "--as-of", at.isoformat(), "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.filterwarnings("ignore:Dialect sqlite")
def test_sqlite_without_the_models_exports_the_types_the_catalog_recorded(
        sqlite_url: Any, pg_url: Any, tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from temporal import catalog

    digests = {}
    for backend, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
        engine = create_engine(url)
        at = fill(engine, Every, portable_rows())
        digests[backend, "models"] = export(engine, tmp_path / f"{backend}-models", as_of=at,
                                            tables=["every"]).content_digest["table:every"]
        plain = cli_export(url.render_as_string(hide_password=False), tmp_path / backend, at,
                           "every")
        digests[backend, "cli"] = plain["content_digest"]["table:every"]
        if backend == "sqlite":
            assert [c["encoding"] for c in plain["schema"]["every"]] == [
                "integer", "integer", "float", "decimal", "text", "boolean", "timestamp_utc",
                "timestamp", "date", "time", "bytes", "uuid", "json"]
            with engine.begin() as conn:
                recorded = catalog.registration(conn, "every").column_types
                assert recorded is not None
                assert recorded["amount"] == {"type": "Numeric", "precision": 38,
                                              "scale": 10, "asdecimal": True}
                assert recorded["seen"] == {"type": "DateTime", "timezone": True}
                # A record that no longer matches the declared column is not used.
                catalog.record_types(conn, "every", {**recorded, "label": {"type": "Uuid"}})
            stale = cli_export(sqlite_url.render_as_string(), tmp_path / "stale", at, "every")
            assert stale["schema"]["every"][4]["encoding"] == "text"
            assert stale["content_digest"] == plain["content_digest"]
        engine.dispose()
    assert len(set(digests.values())) == 1, digests


@pytest.mark.filterwarnings("ignore:Dialect sqlite")
def test_db_upgrade_records_the_types_of_tables_registered_without_them(
        sqlite_url: Any, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, update

    from temporal import catalog

    engine = create_engine(sqlite_url)
    at = fill(engine, Every, portable_rows())
    with engine.begin() as conn:  # as an older library registered it
        conn.execute(update(catalog.tables).values(column_types=None))
    url = sqlite_url.render_as_string()
    catalog.downgrade(engine, "0005")  # a catalog from before the records: exports as before
    assert cli_export(url, tmp_path / "older", at, "every")["schema"]["every"][11][
        "encoding"] == "text"
    before = cli_export(url, tmp_path / "before", at, "every")
    assert before["schema"]["every"][11]["encoding"] == "text"  # the UUID's CHAR(32)
    catalog.upgrade(engine)  # in this process, which imported the model
    with engine.connect() as conn:
        assert catalog.registration(conn, "every").column_types is not None
    after = cli_export(url, tmp_path / "after", at, "every")
    assert after["schema"]["every"][11]["encoding"] == "uuid"
    with_models = export(engine, tmp_path / "models", as_of=at, tables=["every"])
    assert after["content_digest"] == with_models.content_digest
    engine.dispose()


@pytest.mark.filterwarnings("ignore:Dialect sqlite")
def test_a_sqlite_query_types_the_columns_that_are_table_columns(
        sqlite_url: Any, tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(sqlite_url)
    at = fill(engine, Every, portable_rows())
    table = export(engine, tmp_path / "t", as_of=at, tables=["every"], format="jsonl")
    star = export(engine, tmp_path / "q", as_of=at, query="SELECT * FROM every",
                  name="every", format="jsonl")
    assert star.content_digest["table:every"] == table.content_digest["table:every"]
    assert [c["encoding"] for c in star.schema["every"]] == \
        [c["encoding"] for c in table.schema["every"]]
    assert (tmp_path / "q" / "every" / "part-00000.jsonl").read_bytes() == \
        (tmp_path / "t" / "every" / "part-00000.jsonl").read_bytes()
    some = export(engine, tmp_path / "s", as_of=at, query=(
        "SELECT e.id, e.amount AS total, e.seen, upper(e.label) AS shout, x.token "
        "FROM every e JOIN (SELECT id, token FROM every) x ON x.id = e.id"))
    assert [c["encoding"] for c in some.schema["query"]] == \
        ["integer", "decimal", "timestamp_utc", "other", "other"]
    lines = (tmp_path / "s" / "query" / "part-00000.csv").read_text().splitlines()
    assert lines[1].startswith('"1","1.5000000000","1850-01-01T00:00:00.000000Z",')
    assert verify(tmp_path / "s", engine).ok
    plain = export(engine, tmp_path / "p", as_of=at, query="SELECT token, id FROM every")
    assert [c["encoding"] for c in plain.schema["query"]] == ["uuid", "integer"]
    engine.dispose()


class DoubleBase(DeclarativeBase):
    pass


class Doubles(Temporal, DoubleBase):
    """Doubles among columns SQLite renders itself (no JSON: the batch-wise path)."""

    __tablename__ = "doubles"
    id: Mapped[int] = mapped_column(primary_key=True)
    x: Mapped[float | None] = mapped_column(Double)
    label: Mapped[str | None] = mapped_column(Text)
    y: Mapped[float | None] = mapped_column(Double)


@pytest.mark.filterwarnings("ignore:Dialect sqlite")
@pytest.mark.parametrize("values", [
    [0.1 + 0.2, 1e16, 1e23, 5e-324, 1.7976931348623157e308, -2.5, 123456.789, 1e-05],
    FLOATS,  # infinities and NULL: value by value
], ids=["finite", "special"])
def test_sqlite_doubles_are_spelled_like_the_general_path_and_postgresql(
        sqlite_url: Any, pg_url: Any, tmp_path: Path, values: list[float | None]) -> None:
    from sqlalchemy import create_engine

    rows = [{"id": i, "x": v, "label": TEXTS[i], "y": values[-1 - i]}
            for i, v in enumerate(values)]
    found = {}
    for backend, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
        engine = create_engine(url)
        at = fill(engine, Doubles, rows)
        for copy in (True, False):
            plan = ExportPlan(at=at, query=None, fmt="csv", rows_per_file=3, copy=copy)
            run_export(engine, tmp_path / f"{backend}-{copy}", plan, tables=["doubles"],
                       name="q", wait=5)
            found[backend, copy] = [p.read_bytes() for p in
                                    sorted((tmp_path / f"{backend}-{copy}").rglob("part-*"))]
        engine.dispose()
    assert len(found["sqlite", True]) == 3
    assert all(files == found["postgresql", True] for files in found.values()), found
    assert b'"0.30000000000000004"' in b"".join(found["sqlite", True])

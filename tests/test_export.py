"""Exports as of a moment: byte-identical re-exports, manifests, verify, refusals."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import DateTime, Double, Engine, delete, insert, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import (
    ExportError,
    InvalidTimeError,
    ManifestError,
    Temporal,
    export,
    load,
    transaction_time,
    triggers,
    verify,
)
from tests.models import Base, Customer, Line

LABELS = ["", 'q"uote', "new\nline", "ünï", "a,b"]


class SampleBase(DeclarativeBase):
    pass


class Sample(Temporal, SampleBase):
    """Every type the PostgreSQL COPY path renders itself."""

    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str | None]
    flag: Mapped[bool | None]
    x: Mapped[float | None] = mapped_column(Double)
    seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    naive: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    day: Mapped[date | None]
    token: Mapped[uuid.UUID | None]


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    yield engine


@pytest.fixture
def moment(db: Engine) -> datetime:
    """Some history; returns a moment in the middle of it."""
    with Session(db) as s, s.begin():
        s.add_all([
            Customer(id=1, name='Ada "the first"', email="", score=0.1 + 0.2),
            Customer(id=2, name="Bob, Jr.", email=None, score=float("nan")),
            Customer(id=3, name="Zoë\nnewline", score=float("inf")),
        ])
        s.add_all([Line(order_no="A", line_no=n, sku=f"s{n}", qty=n) for n in (2, 1)])
    with Session(db) as s, s.begin():
        s.get(Customer, 1).tier = "gold"
        t = transaction_time(s)
    return t


def change_everything(db: Engine) -> None:
    with Session(db) as s, s.begin():
        s.execute(update(Customer).values(tier="platinum"))
        s.execute(delete(Customer).where(Customer.id == 2))
        s.execute(insert(Customer), [{"id": 9, "name": "late"}])
        s.execute(delete(Line).where(Line.line_no == 1))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_re_export_after_later_changes_is_byte_identical(
    db: Engine, moment: datetime, tmp_path: Path, fmt: str
) -> None:
    first = export(db, tmp_path / "a", as_of=moment, tables=["customers", "lines"], format=fmt)
    change_everything(db)
    second = export(db, tmp_path / "b", as_of=moment, tables=["customers", "lines"], format=fmt)
    assert first.rows == second.rows == 5
    a, b = tmp_path / "a", tmp_path / "b"
    for entry in first.files:
        assert (a / entry.path).read_bytes() == (b / entry.path).read_bytes()
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()


def test_manifest_checksums_are_the_files_real_sha256(
    db: Engine, moment: datetime, tmp_path: Path
) -> None:
    tmp_path = tmp_path / "out"
    manifest = export(db, tmp_path, as_of=moment, tables=["customers"], rows_per_file=2)
    assert [f.rows for f in manifest.files] == [2, 1]  # split into parts
    for entry in manifest.files:
        data = (tmp_path / entry.path).read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert entry.bytes == len(data)
    body = json.loads((tmp_path / "manifest.json").read_text())
    assert body["as_of"].endswith("Z") and body["order_by"]["customers"][0] == "id"
    assert "password" not in json.dumps(body) and "://" not in json.dumps(body)


def test_content_digest_is_independent_of_format(
    db: Engine, moment: datetime, tmp_path: Path
) -> None:
    csv_export = export(db, tmp_path / "csv", as_of=moment, tables=["customers"])
    json_export = export(db, tmp_path / "json", as_of=moment, tables=["customers"],
                         format="jsonl")
    parquet_export = export(db, tmp_path / "pq", as_of=moment, tables=["customers"],
                            format="parquet")
    assert csv_export.content_digest == json_export.content_digest
    assert parquet_export.content_digest == csv_export.content_digest
    assert verify(tmp_path / "pq", db).ok
    table = load(tmp_path / "pq", as_="pyarrow")
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("email").to_pylist()[:2] == ["", None]


def test_values_are_encoded_canonically(db: Engine, moment: datetime, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    export(db, tmp_path, as_of=moment, tables=["customers"])
    lines = (tmp_path / "customers/part-00000.csv").read_text().splitlines()
    assert lines[0] == '"id","name","tier","email","score","status","revision_note","region_id"'
    assert lines[1].startswith('"1","Ada ""the first""","gold","","0.30000000000000004"')
    # NULL email: an empty, unquoted field; NaN is kept (SQLite itself stores NaN as NULL)
    score = '"NaN"' if db.dialect.name == "postgresql" else ""
    assert lines[2] == f'"2","Bob, Jr.","basic",,{score},"active","created",'
    raw = (tmp_path / "customers/part-00000.csv").read_text()
    assert '"3","Zoë\nnewline","basic",,"Infinity"' in raw  # a newline stays inside quotes
    export(db, tmp_path / "j", as_of=moment, tables=["customers"], format="jsonl")
    first = json.loads((tmp_path / "j/customers/part-00000.jsonl").read_text().splitlines()[0])
    assert first["email"] == "" and first["region_id"] is None and first["score"] == 0.1 + 0.2


def test_as_of_reads_the_right_versions(db: Engine, moment: datetime, tmp_path: Path) -> None:
    before = moment - timedelta(microseconds=1)
    export(db, tmp_path / "before", as_of=before, tables=["customers"])
    export(db, tmp_path / "at", as_of=moment, tables=["customers"])
    part = "customers/part-00000.csv"
    assert '"1","Ada ""the first""","basic"' in (tmp_path / "before" / part).read_text()
    assert '"1","Ada ""the first""","gold"' in (tmp_path / "at" / part).read_text()


def test_verify_passes_then_catches_every_kind_of_tampering(
    db: Engine, moment: datetime, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    manifest = export(db, out, as_of=moment, tables=["customers", "lines"])
    report = verify(out / "manifest.json", db)
    assert report.ok and report.files_checked == len(manifest.files) and report.database_checked

    part = out / manifest.files[0].path
    original = part.read_bytes()
    part.write_bytes(original[:-2] + bytes([original[-2] ^ 1]) + original[-1:])  # flip a bit
    report = verify(out)
    assert not report.ok and "sha256 differs" in report.problems[0]
    part.write_bytes(original)

    part.unlink()
    assert "missing" in verify(out).problems[0]
    part.write_bytes(original)
    assert verify(out).ok

    manifest_text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(manifest_text[: len(manifest_text) // 2])
    with pytest.raises(ManifestError, match="not a readable manifest"):
        verify(out)
    (out / "manifest.json").write_text(manifest_text.replace('"rows": 3', '"rows": 4'))
    with pytest.raises(ManifestError, match="modified after it was written"):
        verify(out)
    (out / "manifest.json").write_text(manifest_text)

    with db.begin() as conn, triggers.maintenance(conn):  # history rewritten, triggers or not
        conn.execute(text("UPDATE customers SET name = 'forged' WHERE id = 3"))
    report = verify(out, db)
    assert not report.ok and "history was changed" in report.problems[0]
    assert report.files_checked == len(manifest.files)  # the files themselves still match


def test_load_verifies_then_reads(db: Engine, moment: datetime, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    export(db, tmp_path, as_of=moment, tables=["customers"])
    frame = load(tmp_path, as_="pandas")
    assert list(frame["id"]) == [1, 2, 3]
    assert frame.loc[0, "email"] == "" and frame["region_id"].isna().all()
    (tmp_path / "customers/part-00000.csv").write_text("tampered")
    with pytest.raises(ManifestError, match="does not verify"):
        load(tmp_path)


def test_bad_requests_are_refused_without_writing(
    db: Engine, moment: datetime, tmp_path: Path
) -> None:
    with pytest.raises(InvalidTimeError, match="future"):
        export(db, tmp_path / "f", as_of=datetime.now().astimezone() + timedelta(hours=1),
               tables=["customers"])
    with pytest.raises(InvalidTimeError, match="naive"):
        export(db, tmp_path / "n", as_of=datetime(2026, 1, 1), tables=["customers"])
    with pytest.raises(ExportError, match="no table named"):
        export(db, tmp_path / "u", as_of=moment, tables=["nope"])
    with pytest.raises(ExportError, match="no table named"):
        export(db, tmp_path / "i", as_of=moment, tables=['customers"; DROP TABLE lines; --'])
    with pytest.raises(ExportError, match="not temporal"):
        export(db, tmp_path / "p", as_of=moment, tables=["regions"])
    with pytest.raises(ExportError, match="unknown format"):
        export(db, tmp_path / "x", as_of=moment, tables=["customers"], format="xml")
    assert not any((tmp_path / d).exists() for d in ("f", "n", "u", "i", "p", "x"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export(db, tmp_path / "full", as_of=moment, tables=["customers"])
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with Session(db) as s:
        assert s.get(Customer, 1).tier == "gold"  # nothing was touched
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM lines")).scalar_one() == 2


@pytest.mark.postgres
def test_export_waits_for_a_transaction_that_stamped_before_as_of(
    pg_engine: Engine, tmp_path: Path
) -> None:
    Base.metadata.create_all(pg_engine)
    writer = Session(pg_engine)
    writer.add(Customer(id=1, name="late"))
    writer.flush()  # stamped now, commits later
    stamp = transaction_time(writer)
    time.sleep(0.01)
    as_of = stamp + timedelta(microseconds=1)
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(
        export(pg_engine, tmp_path / "a", as_of=as_of, tables=["customers"], wait=10)))
    worker.start()
    time.sleep(0.3)
    assert not done, "the export must wait for the open transaction"
    writer.commit()
    writer.close()
    worker.join(10)
    again = export(pg_engine, tmp_path / "b", as_of=as_of, tables=["customers"])
    assert done and done[0].rows == again.rows == 1  # type: ignore[attr-defined]
    with pytest.raises(ExportError, match="still open"):
        blocker = Session(pg_engine)
        blocker.add(Customer(id=2, name="slow"))
        blocker.flush()
        try:
            export(pg_engine, tmp_path / "c", as_of=transaction_time(blocker), tables=["customers"],
                   wait=0.2)
        finally:
            blocker.rollback()
            blocker.close()


@pytest.mark.postgres
def test_export_ignores_transactions_in_other_databases(
    pg_engine: Engine, tmp_path: Path
) -> None:
    """The server is shared: an open writer elsewhere can never commit a version here."""
    import psycopg

    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s:
        s.add(Customer(id=1, name="a"))
        s.commit()
    url = pg_engine.url
    here = url.database
    other = f"{here}_other"
    kwargs = {"host": url.host, "port": url.port, "user": url.username,
              "password": url.password or None}
    with psycopg.connect(dbname=here, autocommit=True, **kwargs) as admin:
        admin.execute(f'CREATE DATABASE "{other}"')
    try:
        with psycopg.connect(dbname=other, application_name="elsewhere", **kwargs) as rival:
            rival.execute("CREATE TABLE busy (n int)")
            rival.execute("INSERT INTO busy VALUES (1)")  # holds an xid, stays open
            started = time.monotonic()
            result = export(pg_engine, tmp_path / "a", as_of=datetime.now().astimezone(),
                            tables=["customers"], wait=5)
            assert time.monotonic() - started < 3, "an other database's writer delayed the export"
            assert result.rows == 1
            rival.rollback()
    finally:
        with psycopg.connect(dbname=here, autocommit=True, **kwargs) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
    blocker = Session(pg_engine)
    blocker.connection().exec_driver_sql("SET application_name = 'slow-writer'")
    blocker.add(Customer(id=2, name="slow"))
    blocker.flush()
    try:
        with pytest.raises(ExportError, match=r"pid \d+ \(slow-writer\), open \d+s"):
            export(pg_engine, tmp_path / "c", as_of=transaction_time(blocker),
                   tables=["customers"], wait=0.2)
    finally:
        blocker.rollback()
        blocker.close()


@pytest.mark.postgres
def test_commit_order_differs_from_start_order(pg_engine: Engine, tmp_path: Path) -> None:
    """Insert 1, 2, 3 from three connections, commit 3, 2, 1; read as of each commit."""
    Base.metadata.create_all(pg_engine)
    sessions = [Session(pg_engine) for _ in range(3)]
    stamps = []
    for n, s in enumerate(sessions, start=1):
        s.add(Customer(id=n, name=f"c{n}"))
        s.flush()
        stamps.append(transaction_time(s))
    seen = {}
    for n in (3, 2, 1):
        sessions[n - 1].commit()
        sessions[n - 1].close()
        with pg_engine.connect() as conn:
            commit_point = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        seen[n] = commit_point
    outs = {}
    for n, point in seen.items():
        m = export(pg_engine, tmp_path / str(n), as_of=point, tables=["customers"])
        outs[n] = m.rows
    # Versions are stamped 1 < 2 < 3 and all committed before any export ran:
    # as of any commit point, every row stamped at or before it is there.
    assert outs == {3: 3, 2: 3, 1: 3}
    before_all = export(pg_engine, tmp_path / "0", as_of=stamps[0] - timedelta(microseconds=1),
                        tables=["customers"])
    assert before_all.rows == 0


def test_the_published_json_schema_matches_the_code() -> None:
    from importlib.resources import files

    from temporal.manifest import MANIFEST_SCHEMA

    shipped = json.loads(files("temporal").joinpath("manifest.schema.json").read_text())
    assert shipped == MANIFEST_SCHEMA
    assert set(MANIFEST_SCHEMA["required"]) >= {"as_of", "files", "content_digest",
                                                "manifest_sha256"}


def test_query_export_sees_every_temporal_table_as_of_the_moment(
    db: Engine, moment: datetime, tmp_path: Path
) -> None:
    join = ("SELECT c.name, c.tier, count(l.line_no) AS lines FROM customers c "
            "LEFT JOIN lines l ON l.qty >= c.id GROUP BY c.name, c.tier")
    first = export(db, tmp_path / "q1", as_of=moment, query=join, name="features")
    change_everything(db)
    second = export(db, tmp_path / "q2", as_of=moment, query=join + ";", name="features")
    assert second.content_digest == first.content_digest
    data = (tmp_path / "q1/features/part-00000.csv").read_text()
    assert data == (tmp_path / "q2/features/part-00000.csv").read_text()
    assert data.splitlines()[0] == '"name","tier","lines"'
    assert '"Ada ""the first""","gold","2"' in data  # both tables as of the moment
    assert "platinum" not in data and "late" not in data
    assert first.query == join and first.tables == []
    assert verify(tmp_path / "q1", db).ok
    with db.connect() as conn:  # the shadowing views are gone: every version is back
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar_one() == 7


@pytest.mark.parametrize("query", [
    "DELETE FROM customers",
    "UPDATE customers SET name = 'x'",
    "INSERT INTO regions (id, name) VALUES (1, 'x')",
])
def test_a_query_that_writes_is_refused_and_writes_nothing(
    db: Engine, moment: datetime, tmp_path: Path, query: str
) -> None:
    with pytest.raises(ExportError, match="must be a SELECT"):
        export(db, tmp_path / "w", as_of=moment, query=query)
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar_one() == 4
        assert conn.execute(text("SELECT count(*) FROM regions")).scalar_one() == 0
    assert not (tmp_path / "w").exists()


def test_the_readme_publishes_the_same_json_schema() -> None:
    from temporal.manifest import MANIFEST_SCHEMA

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("<summary>The manifest's JSON Schema</summary>")[1]
    published = json.loads(block.split("```json\n")[1].split("\n```")[0])
    assert published == MANIFEST_SCHEMA


def test_exports_with_the_earlier_json_digest_still_verify(db: Engine, moment: datetime,
                                                           tmp_path: Path) -> None:
    from temporal.export import ExportPlan, run_export
    from temporal.manifest import CSV_ROWS, JSON_ROWS

    plan = ExportPlan(at=moment, query=None, fmt="csv", rows_per_file=1000, digest=JSON_ROWS)
    old = run_export(db, tmp_path / "old", plan, tables=["customers"], name="query", wait=5)
    new = export(db, tmp_path / "new", as_of=moment, tables=["customers"])
    assert old.content_digest["algorithm"] == JSON_ROWS
    assert new.content_digest["algorithm"] == CSV_ROWS
    assert old.content_digest["all"] != new.content_digest["all"]
    assert [f.sha256 for f in old.files] == [f.sha256 for f in new.files]  # same files
    assert old.path is not None and verify(old.path, db).ok
    # ... and the CSV digest is literally the hash of the data lines
    data = b"".join((tmp_path / "new" / f.path).read_bytes().split(b"\n", 1)[1]
                    for f in new.files)
    assert new.content_digest["all"] == hashlib.sha256(data).hexdigest()


@pytest.mark.postgres
def test_postgresql_copy_path_writes_the_same_bytes_as_the_general_path(
        pg_engine: Engine, tmp_path: Path) -> None:
    import math
    import random
    import struct

    from temporal.clock import UTC
    from temporal.export import ExportPlan, run_export

    SampleBase.metadata.create_all(pg_engine)
    rng = random.Random(7)
    floats = [0.0, -0.0, 100.0, 1e15, 1.5e15, 2.0**53, 2.0**53 + 2, 3.611542257558134e16,
              1e16, 1e17, 1e-5, 0.1 + 0.2, 1.7976931348623157e308, 5e-324, float("nan"),
              float("inf"), -float("inf"), 9.32024290456298e16, 1e100]
    while len(floats) < 3000:
        bits = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        floats += [bits, rng.uniform(-1e6, 1e6), float(rng.randint(-10**18, 10**18))]
    floats = [f for f in floats if not (isinstance(f, float) and math.isnan(f))] + [math.nan]
    with Session(pg_engine) as s, s.begin():
        for i, f in enumerate(floats, start=1):
            s.add(Sample(
                id=i, label=None if i % 11 == 0 else LABELS[i % 5],
                flag=None if i % 7 == 0 else bool(i % 2), x=None if i % 13 == 0 else f,
                seen=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=i * 7919),
                naive=datetime(999 + i % 2000, 1 + i % 12, 1 + i % 28, i % 24, 0, 0, i),
                day=(datetime(2000, 1, 1) + timedelta(days=i)).date(),
                token=uuid.UUID(int=rng.getrandbits(128))))
        moment = transaction_time(s)
    at = moment + timedelta(microseconds=1)
    manifests = {}
    for copy in (True, False):
        plan = ExportPlan(at=at, query=None, fmt="csv", rows_per_file=1000, copy=copy)
        manifests[copy] = run_export(pg_engine, tmp_path / str(copy), plan,
                                     tables=["samples"], name="query", wait=5)
    fast, general = manifests[True], manifests[False]
    assert len(fast.files) == 4 and fast.rows == len(floats)
    for a, b in zip(fast.files, general.files, strict=True):
        assert (tmp_path / "True" / a.path).read_bytes() == \
            (tmp_path / "False" / b.path).read_bytes(), a.path
    assert fast.content_digest == general.content_digest
    jsonl = export(pg_engine, tmp_path / "jsonl", as_of=at, tables=["samples"], format="jsonl")
    assert jsonl.content_digest == fast.content_digest


@pytest.mark.postgres
def test_double_sql_spells_every_double_like_python(pg_engine: Engine) -> None:
    """The COPY path's text for a double equals repr() (NaN/Infinity: canonical spelling)."""
    import math
    import random
    import struct

    from temporal.encoding import canonical
    from temporal.pgcopy import double_sql

    rng = random.Random(2026)
    values = [0.0, -0.0, 1.0, 100.0, 1e14, 1e15, 1.5e15, -1.5e15, 2.0**53, 2.0**53 + 2, 1e16,
              1e17, 1e-4, 1e-5, 0.1, 1 / 3, 1e22, 1e100, 5e-324, 1.7976931348623157e308,
              -1.7976931348623157e308, 999999999999999.9, 1234567890123456.7,
              float("nan"), float("inf"), -float("inf")]
    # every magnitude: PostgreSQL prints 1e23, 2e23, 4e23, 8e23... with a digit too many
    values += [sign * k * 10.0**p for p in range(-324, 309) for k in (1, 2, 3, 4, 5, 8, 9)
               for sign in (1, -1) if math.isfinite(k * 10.0**p)]
    for _ in range(8_000):
        values += [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0],
                   rng.uniform(-1e6, 1e6), round(rng.uniform(-1000, 1000), rng.randint(0, 6)),
                   rng.random() * 10 ** rng.randint(-30, 30),
                   float(rng.randint(-10**18, 10**18))]
    values = [v for v in values if not math.isnan(v)] + [math.nan]
    with pg_engine.connect() as conn:
        conn.exec_driver_sql("SET extra_float_digits = 3")
        rendered = conn.exec_driver_sql(
            f"SELECT v, {double_sql('v')} FROM unnest(%(v)s::float8[]) AS v",
            {"v": values}).all()
    assert len(rendered) == len(values)
    wrong = [(v, text) for v, text in rendered if text != canonical(v)]
    assert wrong == []
    assert sum(math.isnan(v) for v, _ in rendered) == 1

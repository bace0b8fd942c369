"""Point-in-time joins: each spine row's features as of its own time, never later."""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from temporal import ExportError, archive, export, history, transaction_time, verify
from temporal.cli import app
from tests.models import Base, Customer, Line

US = timedelta(microseconds=1)


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    yield engine


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_spine(path: Path, rows: list[tuple[Any, ...]],
                header: tuple[str, ...] = ("example", "customer", "t", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def story(db: Engine) -> list[datetime]:
    """Customer 1: ada, ada 2, deleted, back as ada 3. Customer 2: bob, unchanged."""
    stamps = []
    with Session(db) as s, s.begin():
        s.add_all([Customer(id=1, name="ada"), Customer(id=2, name="bob")])
        stamps.append(transaction_time(s))
    with Session(db) as s, s.begin():
        s.get(Customer, 1).name = "ada 2"
        stamps.append(transaction_time(s))
    with Session(db) as s, s.begin():
        s.delete(s.get(Customer, 1))
        stamps.append(transaction_time(s))
    with Session(db) as s, s.begin():
        s.add(Customer(id=1, name="ada 3"))
        stamps.append(transaction_time(s))
    return stamps


def edge_spine(stamps: list[datetime]) -> list[tuple[Any, ...]]:
    t1, t2, t3, t4 = stamps
    return [
        (1, 1, iso(t1 - US), "before the first version"),
        (2, 1, iso(t1), "exactly at a version's start"),
        (3, 1, iso(t2 - US), "just before its end"),
        (4, 1, iso(t2), "exactly at its end: the next version"),
        (5, 1, iso(t3), "after the delete"),
        (6, 1, iso(t4), "re-inserted"),
        (7, 3, iso(t4), "a key with no history"),
        (8, 2, iso(t4), "never changed"),
    ]


EXPECTED = {1: "", 2: "ada", 3: "ada", 4: "ada 2", 5: "", 6: "ada 3", 7: "", 8: "bob"}


def test_each_row_gets_the_version_valid_at_its_own_time(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    spine = write_spine(tmp_path / "labels.csv", edge_spine(story))
    manifest = export(db, tmp_path / "out", as_of=story[-1], spine=spine, at="t",
                      join={"customers": "customer"})
    rows = rows_of(tmp_path / "out/spine/part-00000.csv")
    assert {int(r["example"]): r["customers.name"] for r in rows} == EXPECTED
    assert list(rows[0])[:5] == ["example", "customer", "t", "label", "customers.id"]
    assert "customers.created_at" not in rows[0] and "customers.expired_at" not in rows[0]
    assert [r["label"] for r in rows][:2] == ["before the first version",
                                              "exactly at a version's start"]
    assert manifest.tables == ["customers"]
    record = json.loads((tmp_path / "out/manifest.json").read_text())["spine"]
    assert record["file"] == "spine.csv" and record["format"] == "csv"
    assert record["at"] == "t" and record["join"] == {
        "customers": {"spine": ["customer"], "key": ["id"]}}
    import hashlib

    assert record["sha256"] == hashlib.sha256(spine.read_bytes()).hexdigest()
    assert (tmp_path / "out/spine.csv").read_bytes() == spine.read_bytes()
    assert verify(tmp_path / "out", db).ok


def test_reproducible_after_later_writes_and_archival(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    spine = write_spine(tmp_path / "labels.csv", edge_spine(story))
    first = export(db, tmp_path / "a", as_of=story[-1], spine=spine, at="t",
                   join={"customers": "customer"}, format="parquet")
    with Session(db) as s, s.begin():
        s.get(Customer, 2).name = "bob later"
        s.get(Customer, 1).name = "ada later"
    assert archive(db, ttl=timedelta(microseconds=1), tables=["customers"]).moved >= 3
    second = export(db, tmp_path / "b", as_of=story[-1], spine=spine, at="t",
                    join={"customers": "customer"}, format="parquet")
    assert second.to_json() == first.to_json()
    assert ((tmp_path / "a/spine/part-00000.parquet").read_bytes()
            == (tmp_path / "b/spine/part-00000.parquet").read_bytes())
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "b/spine/part-00000.parquet")
    names = dict(zip(table.column("example").to_pylist(),
                     table.column("customers.name").to_pylist(), strict=True))
    assert names == {k: v or None for k, v in EXPECTED.items()}  # archived versions read
    assert verify(tmp_path / "a", db).ok


def test_no_feature_is_newer_than_its_row(db: Engine, tmp_path: Path) -> None:
    """Leakage by construction: random history, random event times (many exactly at a
    stamp); every row's features are those of the version valid at its time."""
    rng = random.Random(14)
    stamps: list[datetime] = []
    alive: set[int] = set()
    for step in range(25):
        with Session(db) as s, s.begin():
            for key in rng.sample(range(1, 9), 3):
                if key in alive and rng.random() < 0.3:
                    s.delete(s.get(Customer, key))
                    alive.discard(key)
                elif key in alive:
                    s.get(Customer, key).name = f"k{key} step {step}"
                else:
                    s.add(Customer(id=key, name=f"k{key} born {step}", score=step))
                    alive.add(key)
            stamps.append(transaction_time(s))
    spine = []
    for example in range(200):
        moment = rng.choice(stamps) + rng.choice([-US, timedelta(0), timedelta(0), US])
        spine.append((example, rng.randint(0, 9), iso(min(moment, stamps[-1])), example % 2))
    path = write_spine(tmp_path / "events.csv", spine)
    export(db, tmp_path / "out", as_of=stamps[-1], spine=path, at="t",
           join={"customers": "customer"})
    out = rows_of(tmp_path / "out/spine/part-00000.csv")
    assert len(out) == len(spine)
    with Session(db) as s:
        versions = {k: history(s, Customer, k) for k in range(0, 10)}
    for row in out:
        t = datetime.fromisoformat(row["t"].replace("Z", "+00:00"))
        valid = [v for v in versions[int(row["customer"])]
                 if v.created_at <= t and (v.expired_at is None or v.expired_at > t)]
        assert len(valid) <= 1
        if not valid:
            assert row["customers.name"] == "" and row["customers.id"] == ""
            continue
        assert valid[0].created_at <= t  # never a later version
        assert row["customers.name"] == valid[0].name
        assert row["customers.score"] == repr(float(valid[0].score))


def test_a_spine_query_reading_a_plain_table(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE labels (example INTEGER, customer INTEGER, "
                          "t VARCHAR(40), label VARCHAR(60))"))
        for row in edge_spine(story):
            conn.execute(text("INSERT INTO labels VALUES (:e, :c, :t, :l)"),
                         dict(zip("ectl", row, strict=True)))
    cast = "t" if db.dialect.name == "sqlite" else "CAST(t AS timestamptz) AS t"
    query = f"SELECT example, customer, {cast}, label FROM labels WHERE label LIKE '%e%'"
    manifest = export(db, tmp_path / "q", as_of=story[-1], spine_query=query, at="t",
                      join={"customers": "customer"}, name="training")
    rows = rows_of(tmp_path / "q/training/part-00000.csv")
    assert {int(r["example"]): r["customers.name"] for r in rows} == EXPECTED
    assert manifest.spine is not None
    assert manifest.spine["query"] == query and manifest.unversioned == ["labels"]
    assert verify(tmp_path / "q", db).ok
    with db.begin() as conn:  # the labels are the user's input: a change is caught
        conn.execute(text("UPDATE labels SET label = 'relabelled' WHERE example = 2"))
    assert not verify(tmp_path / "q", db).ok


def test_composite_keys_and_two_tables(db: Engine, tmp_path: Path) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Customer(id=1, name="ada"), Line(order_no="A", line_no=1, sku="x", qty=1)])
        t1 = transaction_time(s)
    with Session(db) as s, s.begin():
        s.get(Line, ("A", 1)).qty = 5
        t2 = transaction_time(s)
    spine = write_spine(tmp_path / "s.csv", [(1, "A", 1, iso(t1)), (1, "A", 1, iso(t2)),
                                             (1, "B", 1, iso(t2))],
                        header=("customer", "order_no", "line_no", "t"))
    export(db, tmp_path / "o", as_of=t2, spine=spine, at="t",
           join={"customers": "customer", "lines": ["order_no", "line_no"]})
    rows = rows_of(tmp_path / "o/spine/part-00000.csv")
    assert [(r["order_no"], r["lines.qty"], r["customers.name"]) for r in rows] == [
        ("A", "1", "ada"), ("A", "5", "ada"), ("B", "", "ada")]


def test_a_parquet_spine(db: Engine, story: list[datetime], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = edge_spine(story)
    table = pa.table({
        "example": [r[0] for r in rows], "customer": [r[1] for r in rows],
        "t": pa.array([datetime.fromisoformat(r[2].replace("Z", "+00:00")) for r in rows],
                      type=pa.timestamp("us", tz="UTC")),
        "label": [r[3] for r in rows]})
    pq.write_table(table, tmp_path / "labels.parquet")
    manifest = export(db, tmp_path / "p", as_of=story[-1], spine=tmp_path / "labels.parquet",
                      at="t", join={"customers": "customer"})
    out = rows_of(tmp_path / "p/spine/part-00000.csv")
    assert {int(r["example"]): r["customers.name"] for r in out} == EXPECTED
    assert manifest.spine is not None and manifest.spine["file"] == "spine.parquet"
    assert verify(tmp_path / "p", db).ok


def test_rows_after_as_of_are_refused_and_nothing_is_written(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    spine = write_spine(tmp_path / "late.csv", [*edge_spine(story), (9, 1, iso(story[-1] + US),
                                                                    "from the future")])
    with pytest.raises(ExportError, match=r"1 spine row\(s\) have t after the export's as_of"):
        export(db, tmp_path / "late", as_of=story[-1], spine=spine, at="t",
               join={"customers": "customer"})
    assert not (tmp_path / "late").exists()
    missing = write_spine(tmp_path / "none.csv", [(1, 1, "", "no time"),
                                                  (2, 1, iso(story[0]), "a time")])
    with pytest.raises(ExportError, match="no time in column 't'"):
        export(db, tmp_path / "late", as_of=story[-1], spine=missing, at="t",
               join={"customers": "customer"})


def test_a_spine_time_that_is_not_a_time_is_refused(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    spine = write_spine(tmp_path / "words.csv", [(1, 1, "yesterday", "x")])
    with pytest.raises(ExportError, match=r"not a time|no time in column"):
        export(db, tmp_path / "w", as_of=story[-1], spine=spine, at="t",
               join={"customers": "customer"})
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"at": "when"}, "no column 'when'"),
    ({"join": {"customers": "nobody"}}, "no column 'nobody'"),
    ({"join": {"regions": "customer"}}, "not temporal"),
    ({"join": {"lines": "customer"}}, "2-column key"),
    ({"join": {}}, "at least one table"),
])
def test_bad_joins_are_refused(db: Engine, story: list[datetime], tmp_path: Path,
                               kwargs: dict[str, Any], message: str) -> None:
    spine = write_spine(tmp_path / "s.csv", edge_spine(story))
    arguments: dict[str, Any] = {"at": "t", "join": {"customers": "customer"}, **kwargs}
    with pytest.raises(ExportError, match=message):
        export(db, tmp_path / "bad", as_of=story[-1], spine=spine, **arguments)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("query", [
    "SELECT 1 AS customer, CURRENT_TIMESTAMP AS t; DELETE FROM customers",
    "DELETE FROM customers RETURNING id AS customer, created_at AS t",
    "SELECT 1 AS customer, CURRENT_TIMESTAMP AS t) AS a; DELETE FROM customers; "
    "SELECT * FROM (SELECT 1",
])
def test_a_spine_query_cannot_write(db: Engine, story: list[datetime], tmp_path: Path,
                                    query: str) -> None:
    with db.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM customers")).scalar_one()
    with pytest.raises(ExportError, match="query"):  # the sandbox says why
        export(db, tmp_path / "w", as_of=story[-1], spine_query=query, at="t",
               join={"customers": "customer"})
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar_one() == before
    assert not (tmp_path / "w").exists()


def test_a_spine_key_of_another_type(db: Engine, story: list[datetime], tmp_path: Path
                                     ) -> None:
    spine = write_spine(tmp_path / "s.csv", [(1, "one", iso(story[0]), "x")])
    if db.dialect.name == "postgresql":  # text cannot meet an integer key
        with pytest.raises(ExportError, match="the join failed"):
            export(db, tmp_path / "k", as_of=story[-1], spine=spine, at="t",
                   join={"customers": "customer"})
        assert not (tmp_path / "k").exists()
    else:  # SQLite compares by affinity: "one" matches no integer key
        export(db, tmp_path / "k", as_of=story[-1], spine=spine, at="t",
               join={"customers": "customer"})
        assert rows_of(tmp_path / "k/spine/part-00000.csv")[0]["customers.name"] == ""


def test_verify_catches_a_changed_spine_copy(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    spine = write_spine(tmp_path / "s.csv", edge_spine(story))
    export(db, tmp_path / "v", as_of=story[-1], spine=spine, at="t",
           join={"customers": "customer"})
    copy = tmp_path / "v/spine.csv"
    copy.write_text(copy.read_text().replace("re-inserted", "re-labelled"))
    report = verify(tmp_path / "v")
    assert not report.ok and any("spine" in p for p in report.problems)
    assert not verify(tmp_path / "v", db).ok


def test_cli_point_in_time_join(db: Engine, story: list[datetime], tmp_path: Path) -> None:
    url = db.url.render_as_string(hide_password=False)
    spine = write_spine(tmp_path / "s.csv", edge_spine(story))
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["export", "--as-of", iso(story[-1]), "--spine", str(spine),
                                 "--at", "t", "--join", "customers=customer", "--out",
                                 str(out), "--url", url])
    assert result.exit_code == 0, result.output
    rows = rows_of(out / "spine/part-00000.csv")
    assert {int(r["example"]): r["customers.name"] for r in rows} == EXPECTED
    checked = runner.invoke(app, ["verify", str(out), "--url", url])
    assert checked.exit_code == 0, checked.output
    for bad in (["--join", "customers"], ["--join", "customers="]):
        refused = runner.invoke(app, ["export", "--as-of", iso(story[-1]), "--spine",
                                      str(spine), "--at", "t", *bad, "--out",
                                      str(tmp_path / "x"), "--url", url])
        assert refused.exit_code == 2 and "TABLE=SPINE_COLUMN" in refused.output
    both = runner.invoke(app, ["export", "--as-of", iso(story[-1]), "--spine", str(spine),
                               "--table", "customers", "--at", "t", "--join", "customers=c",
                               "--out", str(tmp_path / "x"), "--url", url])
    assert both.exit_code == 2
    assert not (tmp_path / "x").exists()


def test_every_format_and_read_path_gives_the_same_content(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    """On PostgreSQL a CSV join streams canonical text from COPY; JSON lines decode rows
    in Python. Both must give the same canonical rows (doubles, times, text, NULLs)."""
    with Session(db) as s, s.begin():
        s.get(Customer, 2).score = 0.1 + 0.2
        s.get(Customer, 2).email = 'q"uote, comma'
        last = transaction_time(s)
    spine = write_spine(tmp_path / "s.csv", [*edge_spine(story), (9, 2, iso(last), "late")])
    digests = set()
    for fmt in ("csv", "jsonl", "parquet"):
        manifest = export(db, tmp_path / fmt, as_of=last, spine=spine, at="t",
                          join={"customers": "customer"}, format=fmt)
        digests.add(manifest.content_digest["all"])
    assert len(digests) == 1
    rows = rows_of(tmp_path / "csv/spine/part-00000.csv")
    assert rows[-1]["customers.score"] == "0.30000000000000004"
    assert rows[-1]["customers.email"] == 'q"uote, comma' and rows[-2]["customers.email"] == ""


def test_load_reads_a_join_back_with_pandas(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    from temporal import load

    spine = write_spine(tmp_path / "s.csv", edge_spine(story))
    export(db, tmp_path / "l", as_of=story[-1], spine=spine, at="t",
           join={"customers": "customer"}, format="parquet")
    frame = load(tmp_path / "l")
    assert list(frame.columns[:5]) == ["example", "customer", "t", "label", "customers.id"]
    assert frame.set_index("example")["customers.name"].fillna("").to_dict() == EXPECTED


def test_a_spine_file_of_many_batches(db: Engine, story: list[datetime], tmp_path: Path) -> None:
    rows = [(n, 2 if n % 2 else 1, iso(story[n % 4]), "x") for n in range(25_001)]
    spine = write_spine(tmp_path / "big.csv", rows)
    manifest = export(db, tmp_path / "big", as_of=story[-1], spine=spine, at="t",
                      join={"customers": "customer"}, rows_per_file=10_000)
    assert manifest.rows == 25_001 and len(manifest.files) == 3
    expected = {0: "ada", 1: "ada 2", 2: "", 3: "ada 3"}
    for part in sorted((tmp_path / "big/spine").iterdir()):
        for row in rows_of(part):
            n = int(row["example"])
            assert row["customers.name"] == ("bob" if n % 2 else expected[n % 4])


def test_a_spine_inside_the_output_folder_is_refused(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    spine = write_spine(tmp_path / "out/labels.csv", edge_spine(story))
    kept = spine.read_bytes()
    with pytest.raises(ExportError, match="inside the output folder"):
        export(db, tmp_path / "out", as_of=story[-1], spine=spine, at="t",
               join={"customers": "customer"}, force=True)
    assert spine.read_bytes() == kept


@pytest.mark.parametrize("with_bytes", [False, True])
def test_spine_values_keep_their_identity(db: Engine, story: list[datetime], tmp_path: Path,
                                          with_bytes: bool) -> None:
    """Spine columns come out as they went in: "" is not NULL, quotes, newlines, floats,
    booleans and dates survive the load (on PostgreSQL through COPY, as CSV unless a
    column is binary)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["", None, 'q"uote, comma', "new\nline", "ünï"]
    floats = [0.1, float("inf"), -0.0, 1e300,
              float("nan") if db.dialect.name == "postgresql" else 2.5]
    columns: dict[str, Any] = {
        "customer": [2] * 5, "t": pa.array([story[-1]] * 5, type=pa.timestamp("us", tz="UTC")),
        "text": texts, "x": floats, "flag": [True, False, None, True, False],
        "day": pa.array([date(2026, 1, 2), None, date(1999, 12, 31), date(2026, 3, 1),
                         date(2000, 2, 29)])}
    if with_bytes:
        columns["blob"] = [b"\x00\xff", None, b"", b"a", b"b"]
    pq.write_table(pa.table(columns), tmp_path / "values.parquet")
    export(db, tmp_path / "v", as_of=story[-1], spine=tmp_path / "values.parquet", at="t",
           join={"customers": "customer"}, format="jsonl")
    lines = (tmp_path / "v/spine/part-00000.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    by_text = {r["text"]: r for r in rows}
    assert set(by_text) == set(texts)
    # JSON lines spell non-finite doubles bare (NaN, Infinity), as every reader accepts
    assert by_text[""]["x"] == 0.1 and by_text[None]["x"] == float("inf")
    assert by_text['q"uote, comma']["x"] == -0.0 and by_text["new\nline"]["x"] == 1e300
    if db.dialect.name == "postgresql":
        assert math.isnan(by_text["ünï"]["x"])
    else:
        assert by_text["ünï"]["x"] == 2.5
    assert [by_text[t]["flag"] for t in texts] == [True, False, None, True, False]
    assert by_text[""]["day"] == "2026-01-02" and by_text[None]["day"] is None
    assert {r["customers.name"] for r in rows} == {"bob"}
    if with_bytes:
        assert by_text[""]["blob"] == "00ff" and by_text[None]["blob"] is None
        assert by_text['q"uote, comma']["blob"] == ""


@pytest.mark.postgres
def test_the_join_waits_for_a_writer_that_stamped_before_as_of(
    pg_engine: Engine, tmp_path: Path
) -> None:
    Base.metadata.create_all(pg_engine)
    writer = Session(pg_engine)
    writer.add(Customer(id=1, name="late commit"))
    writer.flush()
    stamp = transaction_time(writer)
    spine = write_spine(tmp_path / "s.csv", [(1, 1, iso(stamp), "x")])
    try:
        with pytest.raises(ExportError, match="still open"):
            export(pg_engine, tmp_path / "a", as_of=stamp, spine=spine, at="t",
                   join={"customers": "customer"}, wait=0.2)
        writer.commit()
    finally:
        writer.close()
    export(pg_engine, tmp_path / "b", as_of=stamp, spine=spine, at="t",
           join={"customers": "customer"})
    assert rows_of(tmp_path / "b/spine/part-00000.csv")[0]["customers.name"] == "late commit"


def test_a_spine_query_follows_the_query_rules(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    """Temporal tables are read as of the moment; another spelling that would read the
    present (or a side-effecting function) is refused by the sandbox."""
    schema = "main" if db.dialect.name == "sqlite" else "public"
    for query in (f"SELECT id AS customer, created_at AS t FROM {schema}.customers",
                  "SELECT id AS customer, created_at AS t FROM customers_archive"):
        with pytest.raises(ExportError):
            export(db, tmp_path / "r", as_of=story[-1], spine_query=query, at="t",
                   join={"customers": "customer"})
    assert not (tmp_path / "r").exists()
    time = "t" if db.dialect.name == "sqlite" else "CAST(t AS timestamptz)"
    seen = export(db, tmp_path / "ok", as_of=story[1], name="seen", at="t",
                  spine_query=f"SELECT id AS customer, {time} AS t FROM (SELECT id, "
                  f"'{iso(story[1])}' AS t FROM customers) AS c",
                  join={"customers": "customer"})
    rows = rows_of(tmp_path / "ok/seen/part-00000.csv")
    assert [(r["customer"], r["customers.name"]) for r in rows] == [("1", "ada 2"), ("2", "bob")]
    assert seen.unversioned == []

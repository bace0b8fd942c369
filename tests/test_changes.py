"""The change feed: every change in (since, until], typed, ordered, reproducible, verifiable."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, insert, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from temporal import (
    ExportError,
    InvalidTimeError,
    archive,
    changes,
    iter_changes,
    transaction_time,
    verify,
)
from temporal.cli import app
from tests.models import Base, Customer, Line

US = timedelta(microseconds=1)


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    yield engine


def feed(path: Path, table: str = "customers") -> list[dict[str, str]]:
    """The feed as an outside reader sees it (the csv module)."""
    with open(path / table / "part-00000.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def short(rows: list[dict[str, str]]) -> list[tuple[str, str, str, str]]:
    return [(r["id"], r["name"], r["_change_type"], r["_commit_time"]) for r in rows]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def story(db: Engine) -> list[datetime]:
    """Inserts, an update, a delete, a re-insert; one stamp per transaction."""
    stamps = []
    with Session(db) as s, s.begin():
        s.add_all([Customer(id=1, name="ada"), Customer(id=2, name="bob")])
        stamps.append(transaction_time(s))
    with Session(db) as s, s.begin():
        s.get(Customer, 1).name = "ada 2"
        s.delete(s.get(Customer, 2))
        stamps.append(transaction_time(s))
    with Session(db) as s, s.begin():
        s.add(Customer(id=2, name="bob again"))
        s.execute(update(Customer).where(Customer.id == 1).values(name="ada 3"))
        stamps.append(transaction_time(s))
    return stamps


def test_every_kind_of_change_in_commit_time_key_type_order(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    t1, t2, t3 = story
    manifest = changes(db, tmp_path / "feed", since=t1 - US, until=t3, tables=["customers"])
    assert short(feed(tmp_path / "feed")) == [
        ("1", "ada", "insert", iso(t1)),
        ("2", "bob", "insert", iso(t1)),
        ("1", "ada", "update_preimage", iso(t2)),
        ("1", "ada 2", "update_postimage", iso(t2)),
        ("2", "bob", "delete", iso(t2)),
        ("1", "ada 2", "update_preimage", iso(t3)),
        ("1", "ada 3", "update_postimage", iso(t3)),
        ("2", "bob again", "insert", iso(t3)),
    ]
    header = list(feed(tmp_path / "feed")[0])
    assert header[-2:] == ["_change_type", "_commit_time"] and "created_at" not in header
    assert manifest.changes == {"since": iso(t1 - US), "until": iso(t3)}
    assert manifest.as_of == iso(t3) and manifest.tables == ["customers"]
    written = json.loads((tmp_path / "feed/manifest.json").read_text())
    assert written["changes"] == {"since": iso(t1 - US), "until": iso(t3)}
    assert written["order_by"]["customers"] == ["_commit_time", "id", "_change_type"]
    assert verify(tmp_path / "feed", db).ok


def test_the_window_is_half_open(db: Engine, story: list[datetime], tmp_path: Path) -> None:
    t1, t2, t3 = story
    changes(db, tmp_path / "w", since=t1, until=t2, tables=["customers"])
    assert {r["_commit_time"] for r in feed(tmp_path / "w")} == {iso(t2)}  # t1 out, t2 in
    changes(db, tmp_path / "x", since=t2 - US, until=t3 - US, tables=["customers"])
    assert {r["_commit_time"] for r in feed(tmp_path / "x")} == {iso(t2)}
    changes(db, tmp_path / "y", since=t3, until=t3 + US, tables=["customers"])
    assert feed(tmp_path / "y") == []


def test_one_change_per_key_per_transaction(db: Engine, tmp_path: Path) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Customer(id=1, name="kept"), Customer(id=2, name="doomed")])
        before = transaction_time(s)
    with Session(db) as s, s.begin():
        s.add(Customer(id=3, name="new"))
        s.flush()
        s.get(Customer, 3).name = "new, edited"  # insert + update: one insert
        s.flush()
        s.get(Customer, 1).name = "once"
        s.flush()
        s.get(Customer, 1).name = "twice"  # two updates: one pre/post pair
        s.flush()
        s.get(Customer, 2).name = "edited first"
        s.flush()
        s.delete(s.get(Customer, 2))  # update + delete: one delete of the old values
        s.add(Customer(id=4, name="gone at once"))
        s.flush()
        s.delete(s.get(Customer, 4))  # insert + delete: nothing
        stamp = transaction_time(s)
    changes(db, tmp_path / "c", since=before, until=stamp, tables=["customers"])
    assert short(feed(tmp_path / "c")) == [
        ("1", "kept", "update_preimage", iso(stamp)),
        ("1", "twice", "update_postimage", iso(stamp)),
        ("2", "doomed", "delete", iso(stamp)),
        ("3", "new, edited", "insert", iso(stamp)),
    ]


def test_composite_keys_sort_by_every_key_column(db: Engine, tmp_path: Path) -> None:
    with Session(db) as s, s.begin():
        s.add_all([Line(order_no=o, line_no=n, sku="x", qty=1)
                   for o, n in [("B", 1), ("A", 2), ("A", 1)]])
        t = transaction_time(s)
    changes(db, tmp_path / "l", since=t - US, until=t, tables=["lines"])
    rows = feed(tmp_path / "l", "lines")
    assert [(r["order_no"], r["line_no"]) for r in rows] == [("A", "1"), ("A", "2"), ("B", "1")]


def test_the_same_window_later_gives_the_same_bytes_archive_included(
    db: Engine, story: list[datetime], tmp_path: Path
) -> None:
    t1, _, t3 = story
    first = changes(db, tmp_path / "a", since=t1 - US, until=t3, format="jsonl")
    with Session(db) as s, s.begin():  # later writes end versions the window saw
        s.execute(update(Customer).values(tier="gold"))
        s.execute(delete(Customer).where(Customer.id == 2))
        s.execute(insert(Customer), [{"id": 7, "name": "late"}])
    moved = archive(db, ttl=timedelta(microseconds=1), tables=["customers"])
    assert moved.moved > 0
    second = changes(db, tmp_path / "b", since=t1 - US, until=t3, format="jsonl")
    assert second.to_json() == first.to_json()
    for entry in first.files:
        assert (tmp_path / "a" / entry.path).read_bytes() == (tmp_path / "b" / entry.path
                                                              ).read_bytes()
    assert verify(tmp_path / "a", db).ok
    lines = (tmp_path / "a/customers/part-00000.jsonl").read_text().splitlines()
    assert len(lines) == 8 and "late" not in "".join(lines)


def test_verify_finds_a_changed_feed(db: Engine, story: list[datetime], tmp_path: Path) -> None:
    t1, _, t3 = story
    changes(db, tmp_path / "f", since=t1 - US, until=t3, tables=["customers"])
    part = tmp_path / "f/customers/part-00000.csv"
    part.write_text(part.read_text().replace("bob again", "bob AGAIN"))
    report = verify(tmp_path / "f", db)
    assert not report.ok
    assert any("sha256" in p or "bytes" in p for p in report.problems)


def test_in_app_changes_of_a_model(db: Engine, story: list[datetime]) -> None:
    t1, t2, t3 = story
    with Session(db) as s:
        seen = list(iter_changes(s, Customer, since=t1, until=t2))
        assert [(c.change_type, c.values["id"], c.values["name"]) for c in seen] == [
            ("update_preimage", 1, "ada"), ("update_postimage", 1, "ada 2"),
            ("delete", 2, "bob")]
        assert {c.commit_time for c in seen} == {t2}
        everything = list(iter_changes(s, Customer, since=t1 - US))
        assert len(everything) == 8 and everything[-1].commit_time == t3
        assert everything[-1].values["revision_note"] == "created"  # attribute names


def test_refusals(db: Engine, story: list[datetime], tmp_path: Path) -> None:
    t1, _, t3 = story
    with pytest.raises(ExportError, match="must be before"):
        changes(db, tmp_path / "r", since=t3, until=t3)
    with pytest.raises(InvalidTimeError, match="future"):
        changes(db, tmp_path / "r", since=t1, until=t3 + timedelta(days=1))
    with pytest.raises(InvalidTimeError, match="naive"):
        changes(db, tmp_path / "r", since=t1.replace(tzinfo=None), until=t3)
    with pytest.raises(ExportError, match="no table named"):
        changes(db, tmp_path / "r", since=t1, until=t3, tables=["nope"])
    with pytest.raises(ExportError, match="not temporal"):
        changes(db, tmp_path / "r", since=t1, until=t3, tables=["regions"])
    assert not (tmp_path / "r").exists()


def test_cli_changes_and_verify(db: Engine, story: list[datetime], tmp_path: Path) -> None:
    t1, _, t3 = story
    url = db.url.render_as_string(hide_password=False)
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["changes", "--since", iso(t1 - US), "--until", iso(t3),
                                 "--table", "customers", "--out", str(out), "--url", url])
    assert result.exit_code == 0, result.output
    assert "8 changes" in result.output
    assert len(feed(out)) == 8
    checked = runner.invoke(app, ["verify", str(out), "--url", url])
    assert checked.exit_code == 0 and "and the database" in checked.output
    every = runner.invoke(app, ["changes", "--since", iso(t1 - US), "--until", iso(t3),
                                "--out", str(tmp_path / "all"), "--url", url,
                                "--format", "parquet"])
    assert every.exit_code == 0, every.output
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "all/customers/part-00000.parquet")
    assert table.column("_change_type").to_pylist()[:2] == ["insert", "insert"]
    assert (tmp_path / "all/lines").is_dir() and (tmp_path / "all/orders").is_dir()
    bad = runner.invoke(app, ["changes", "--since", iso(t3), "--until", iso(t1),
                              "--out", str(tmp_path / "bad"), "--url", url])
    assert bad.exit_code != 0 and "must be before" in str(bad.exception or bad.output)


@pytest.mark.postgres
def test_the_feed_waits_for_a_writer_that_stamped_inside_the_window(
    pg_engine: Engine, tmp_path: Path
) -> None:
    Base.metadata.create_all(pg_engine)
    with Session(pg_engine) as s, s.begin():
        s.add(Customer(id=1, name="early"))
        since = transaction_time(s)
    writer = Session(pg_engine)
    writer.add(Customer(id=2, name="late commit"))
    writer.flush()  # stamped now, commits later
    until = transaction_time(writer)
    try:
        with pytest.raises(ExportError, match="still open"):
            changes(pg_engine, tmp_path / "a", since=since, until=until, wait=0.2)
        assert not (tmp_path / "a").exists()
        writer.commit()
    finally:
        writer.close()
    changes(pg_engine, tmp_path / "b", since=since, until=until, tables=["customers"])
    assert short(feed(tmp_path / "b")) == [("2", "late commit", "insert", iso(until))]


def test_a_signed_feed(db: Engine, story: list[datetime], tmp_path: Path) -> None:
    t1, _, t3 = story
    key = b"a key of sixteen bytes or more"
    changes(db, tmp_path / "s", since=t1 - US, until=t3, tables=["customers"], signing_key=key)
    assert (tmp_path / "s/manifest.sig").is_file()
    assert verify(tmp_path / "s", db, key=key).ok
    assert not verify(tmp_path / "s", key=b"another key, also long enough").ok

"""verify() checks every claim of a manifest and blames the right side.

Each test edits a manifest the way an attacker would - and recomputes its
``manifest_sha256``, which anyone can - then checks that verify refuses it and
says whether the manifest, the files or the database is wrong.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from temporal import ManifestError, export, load, transaction_time, triggers, verify
from temporal.manifest import CSV_ROWS, read_manifest
from temporal.signing import read_key
from tests.models import Base, Customer


@pytest.fixture
def exported(engine: Engine, tmp_path: Path) -> tuple[Engine, Path, datetime]:
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.execute(insert(Customer), [{"id": i, "name": f"c{i}", "score": i / 3}
                                     for i in range(1, 11)])
        moment = transaction_time(s)
    out = tmp_path / "export"
    export(engine, out, as_of=moment, tables=["customers"])
    return engine, out, moment


def forge(out: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit the manifest and recompute its self-checksum, as anyone can."""
    path = out / "manifest.json"
    body = json.loads(path.read_text())
    body.pop("manifest_sha256")
    edit(body)
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    body["manifest_sha256"] = hashlib.sha256(encoded.encode()).hexdigest()
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")


def test_an_intact_export_verifies(exported: tuple[Engine, Path, datetime]) -> None:
    engine, out, _ = exported
    report = verify(out, engine)
    assert report.ok and report.rows == 10 and report.database_checked, report.problems


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_edited_row_counts_and_digests_are_blamed_on_the_manifest(
    exported: tuple[Engine, Path, datetime], tmp_path: Path, fmt: str
) -> None:
    engine, _, moment = exported
    out = tmp_path / fmt
    export(engine, out, as_of=moment, tables=["customers"], format=fmt)
    assert verify(out).ok
    forge(out, lambda m: m["files"][0].update(rows=1004))
    report = verify(out)
    assert "manifest: claims 1,004 rows for customers/part-00000." + fmt in report.problems[0]
    forge(out, lambda m: m["files"][0].update(rows=10))
    assert verify(out).ok

    forge(out, lambda m: m["content_digest"].update({"table:customers": "0" * 64}))
    report = verify(out)
    assert report.problems == ["manifest: its content digest for customers does not match the "
                               "rows of its own files (the manifest was edited)"]
    with_db = verify(out, engine)  # the database agrees with the files: not its fault
    assert not any("history was changed" in p for p in with_db.problems)
    assert any("the database and the files agree" in p for p in with_db.problems)


def test_paths_outside_the_folder_are_refused_and_never_loaded(
    exported: tuple[Engine, Path, datetime], tmp_path: Path
) -> None:
    _, out, _ = exported
    part = out / "customers" / "part-00000.csv"
    outside = tmp_path / "outside.csv"
    shutil.copy(part, outside)
    for path in ["../outside.csv", str(outside)]:
        forge(out, lambda m, p=path: m["files"][0].update(path=p))
        report = verify(out)
        assert any("points outside the export folder" in p for p in report.problems)
        with pytest.raises(ManifestError, match="does not verify"):
            load(out)
    forge(out, lambda m: m["files"][0].update(path="customers/part-00000.csv"))
    part.unlink()
    part.symlink_to(outside)  # same bytes, but not in the folder
    assert any("points outside" in p for p in verify(out).problems)


def test_unlisted_files_are_reported(exported: tuple[Engine, Path, datetime]) -> None:
    _, out, _ = exported
    (out / "customers" / "part-00001.csv").write_text('"id"\n"99"\n')
    (out / "notes.txt").write_text("x")
    problems = verify(out).problems
    assert "customers/part-00001.csv: not listed in the manifest" in problems
    assert "notes.txt: not listed in the manifest" in problems


def test_an_edited_file_checksum_is_blamed_right_with_a_database(
    exported: tuple[Engine, Path, datetime]
) -> None:
    engine, out, _ = exported
    forge(out, lambda m: m["files"][0].update(sha256="0" * 64))
    assert "sha256 differs" in verify(out).problems[0]
    problems = verify(out, engine).problems
    assert any(p.startswith("manifest: the database re-exports customers/part-00000.csv "
                            "exactly as the file is") for p in problems)


def test_a_changed_file_and_a_changed_database_are_told_apart(
    exported: tuple[Engine, Path, datetime]
) -> None:
    engine, out, _ = exported
    part = out / "customers" / "part-00000.csv"
    original = part.read_text()
    part.write_text(original.replace('"c3"', '"c9"'))
    problems = verify(out, engine).problems
    assert "customers/part-00000.csv: sha256 differs from the manifest" in problems
    assert not any("history was changed" in p for p in problems)
    part.write_text(original)
    with engine.begin() as conn, triggers.maintenance(conn):  # rewritten, triggers or not
        conn.execute(text("UPDATE customers SET name = 'forged' WHERE id = 3"))
    problems = verify(out, engine).problems
    assert any("history was changed after the export" in p for p in problems)


def test_an_edited_schema_or_an_unreadable_moment_is_blamed_on_the_manifest(
    exported: tuple[Engine, Path, datetime]
) -> None:
    engine, out, _ = exported
    forge(out, lambda m: m["schema"]["customers"][1].update(name="surname"))
    assert "header is not the schema's columns" in verify(out).problems[0]
    forge(out, lambda m: m["schema"]["customers"][1].update(name="name"))
    forge(out, lambda m: m.update(as_of="1-01-01T00:00:00.000000Z"))
    assert verify(out, engine).problems == [
        "manifest: as_of '1-01-01T00:00:00.000000Z' is not a valid time"]


def test_a_signed_manifest_proves_who_wrote_it(engine: Engine, tmp_path: Path) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add(Customer(id=1, name="Ada"))
        moment = transaction_time(s)
    key_file = tmp_path / "key"
    key_file.write_text("a long shared secret, 32 bytes!!\n")
    key = read_key(key_file)
    out = tmp_path / "signed"
    export(engine, out, as_of=moment, tables=["customers"], signing_key=key)
    assert (out / "manifest.sig").is_file()
    report = verify(out, key=key)
    assert report.ok and report.signature_checked
    assert "not signed with this key" in verify(out, key=b"another key, 16+ bytes").problems[0]
    forge(out, lambda m: m["files"][0].update(rows=2))
    assert verify(out, key=key).problems[0].startswith("signature: the manifest was not signed")
    unsigned = tmp_path / "unsigned"
    export(engine, unsigned, as_of=moment, tables=["customers"])
    assert "not signed" in verify(unsigned, key=key).problems[0]


@pytest.mark.parametrize("edit, match", [
    (lambda b: b["files"][0].update(rows="10"), "wrong type"),
    (lambda b: b["files"][0].update(rows=None), "wrong type"),
    (lambda b: b["files"][0].update(path=5), "wrong type"),
    (lambda b: b["files"][0].update(bytes=True), "wrong type"),
    (lambda b: b["files"][0].update(table=["x"]), "wrong type"),
    (lambda b: b.update(content_digest=[]), "content_digest"),
    (lambda b: b["content_digest"].update(algorithm=[1]), "content_digest"),
    (lambda b: b.update(schema=[]), "schema"),
    (lambda b: b["schema"].update(customers=[1]), "schema"),
    (lambda b: b.update(as_of=5), "as_of"),
    (lambda b: b.update(spine=5), "spine"),
    (lambda b: b.update(tables=3), "tables"),
    (lambda b: b["writer"].update(rows_per_file=0), "rows_per_file"),
    (lambda b: b["files"].append(dict(b["files"][0], path="customers/./part-00000.csv")),
     "twice"),
])
def test_a_manifest_with_values_of_the_wrong_type_is_one_clear_error(
    exported: tuple[Engine, Path, datetime], edit: Callable[[dict[str, Any]], None], match: str
) -> None:
    """Types a forged (checksum-recomputed) manifest mangles: no crash, and no hang (a
    re-export with rows_per_file 0 never ended)."""
    engine, out, _ = exported
    forge(out, edit)
    with pytest.raises(ManifestError, match=match):
        verify(out, engine)


def test_an_unreadable_as_of_is_blamed_on_the_manifest_without_a_database(
    exported: tuple[Engine, Path, datetime]
) -> None:
    _, out, _ = exported
    forge(out, lambda b: b.update(as_of="yesterday"))
    report = verify(out)
    assert report.problems == ["manifest: as_of 'yesterday' is not a valid time"]


def test_a_parquet_file_rewritten_with_other_column_types_is_refused(
    exported: tuple[Engine, Path, datetime], tmp_path: Path
) -> None:
    """Same values, other types (ids as strings): a training script would read other data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    engine, _, moment = exported
    out = tmp_path / "pq"
    export(engine, out, as_of=moment, tables=["customers"], format="parquet")
    path = out / "customers" / "part-00000.parquet"
    data = pq.read_table(path)
    at = data.column_names.index("id")
    pq.write_table(data.set_column(at, "id", data.column("id").cast(pa.string())), path)
    body = path.read_bytes()
    forge(out, lambda m: m["files"][0].update(sha256=hashlib.sha256(body).hexdigest(),
                                               bytes=len(body)))
    report = verify(out)
    assert not report.ok
    assert any("column id is string, not the manifest's int64" in p for p in report.problems), \
        report.problems


def as_older_encoding(out: Path, algorithm: str, respell: Callable[[bytes], bytes]) -> None:
    """Make ``out`` what an older version wrote: its values spelled by ``respell`` (as an
    older canonical encoding did), its digest named by that version's ``algorithm``."""
    from temporal.manifest import json_row
    from temporal.verification import _csv_fields

    data = out / "customers" / "part-00000.csv"
    header, *lines = data.read_bytes().splitlines(keepends=True)
    lines = [respell(line) for line in lines]
    data.write_bytes(header + b"".join(lines))
    rows = b"".join(lines) if algorithm != "sha256 over canonical JSON rows" else b"".join(
        json_row(_csv_fields(line.decode())) for line in lines)
    digest = hashlib.sha256(rows).hexdigest()

    def edit(m: dict[str, Any]) -> None:
        m["content_digest"] = {"algorithm": algorithm, "all": digest,
                               "table:customers": digest}
        m["files"][0].update(sha256=hashlib.sha256(data.read_bytes()).hexdigest(),
                             bytes=data.stat().st_size)

    forge(out, edit)


@pytest.mark.parametrize("algorithm", ["sha256 over canonical CSV rows",
                                       "sha256 over canonical JSON rows"])
def test_an_export_of_an_older_encoding_is_not_blamed_on_the_database(
        exported: tuple[Engine, Path, datetime], algorithm: str) -> None:
    engine, out, _ = exported
    assert read_manifest(out).content_digest["algorithm"] == \
        CSV_ROWS
    as_older_encoding(out, algorithm, lambda line: line)  # the same text: still equal
    assert verify(out, engine).ok, verify(out, engine).problems

    # A float spelled with 15 digits, as an older encoding might have:
    as_older_encoding(out, algorithm,
                      lambda line: line.replace(b"0.3333333333333333", b"0.333333333333333"))
    assert verify(out).ok  # the files agree with their manifest
    report = verify(out, engine)
    assert len(report.problems) == 1 and not report.ok
    assert report.problems[0].startswith("database: not compared: exported by an older "
                                         f"canonical encoding version ({algorithm!r}")
    assert report.problems[0].endswith("re-export it to compare")
    assert "history" not in report.problems[0]

    # The same files under this version's name: the database is to blame.
    as_older_encoding(out, CSV_ROWS, lambda line: line)
    assert any("history was changed" in p for p in verify(out, engine).problems)


def test_json_lines_of_an_older_encoding_are_not_blamed_on_the_manifest(
        exported: tuple[Engine, Path, datetime], tmp_path: Path) -> None:
    engine, _, moment = exported
    out = tmp_path / "jsonl"
    export(engine, out, as_of=moment, tables=["customers"], format="jsonl")
    data = out / "customers" / "part-00000.jsonl"
    data.write_bytes(data.read_bytes().replace(b"0.3333333333333333", b"0.333333333333333"))

    def edit(m: dict[str, Any]) -> None:
        m["content_digest"]["algorithm"] = "sha256 over canonical CSV rows"
        m["files"][0].update(sha256=hashlib.sha256(data.read_bytes()).hexdigest(),
                             bytes=data.stat().st_size)

    forge(out, edit)  # the digest is of the rows as the older version spelled them
    problems = verify(out).problems
    assert len(problems) == 1 and problems[0].startswith(
        "manifest: exported by an older canonical encoding version"), problems

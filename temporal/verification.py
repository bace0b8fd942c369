"""Proving an export: every claim of its manifest, against the files and the database.

``verify`` never raises for a mismatch; it returns a report listing every
problem, each naming the side to blame:

* **the files**: a listed file missing, or its size or sha256 changed;
  a file in the folder that the manifest does not list;
* **the manifest**: a path outside the export folder (absolute, ``..``, or a
  symlink out), or a claim its own, checksum-intact files contradict - the
  rows of a file, the header or keys against the schema, the content digest
  per table and overall, each recomputed from the files through the canonical
  encoding (``temporal.manifest``). Such a manifest was edited and its
  ``manifest_sha256`` recomputed; a signature (``temporal.signing``) proves who
  wrote it;
* **the database** (with ``source``): a fresh re-export as of the same moment
  differs from files that still match their manifest - history was changed
  after the export. When the database agrees with the files but not with the
  manifest, the manifest is blamed, not the database.

A manifest that cannot be read or fails its own checksum raises
:class:`~temporal.ManifestError`. ``load`` verifies first, then reads an
exported table into pandas or pyarrow, which is what a training script does
next.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from temporal import columnar, signing
from temporal.clock import parse_time
from temporal.encoding import (
    ALL_OVER_ROWS,
    OTHER,
    THIS_ENCODING,
    ColumnType,
    all_digest,
    encoder,
)
from temporal.errors import ExportError, TemporalError
from temporal.export import ROWS_PER_FILE, ExportPlan, run_export
from temporal.manifest import (
    CSV_ROWS,
    DIGEST_ROWS,
    MANIFEST_NAME,
    OLDER_ENCODINGS,
    FileEntry,
    Manifest,
    ManifestError,
    canonical,
    csv_row,
    file_sha256,
    older_encoding,
    read_manifest,
)
from temporal.signing import SIGNATURE_NAME


@dataclass
class VerifyReport:
    """What ``verify`` checked and what did not match; ``ok`` only when nothing."""

    manifest: Path
    files_checked: int = 0
    rows: int = 0
    database_checked: bool = False
    signature_checked: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(manifest: str | Path, source: str | Engine | None = None, *,
           key: bytes | None = None) -> VerifyReport:
    """Check an export against its manifest; with ``source``, re-export and compare.

    With ``key``, the manifest must also carry a valid signature made with it
    (``manifest.sig``). Never raises for a mismatch: the report lists every
    problem found. A manifest that cannot be read or was altered raises
    ManifestError.
    """
    loaded = read_manifest(manifest)
    assert loaded.path is not None
    _check_shape(loaded)
    report = VerifyReport(manifest=loaded.path, rows=loaded.rows)
    root = loaded.path.parent
    if key is not None:
        report.signature_checked = True
        problem = signing.check(loaded.path, key)
        if problem:
            report.problems.append(f"signature: {problem}")
    try:
        parse_time(loaded.as_of)
    except TemporalError:
        report.problems.append(f"manifest: as_of {loaded.as_of!r} is not a valid time")
    intact: dict[str, bool] = {}  # per table: every file matches its checksum
    actual: dict[str, str] = {}  # each readable file's real sha256
    for entry in loaded.files:
        ok = _check_file(root, entry, report, actual)
        intact[entry.table] = intact.get(entry.table, True) and ok
    if loaded.spine is not None:  # a point-in-time join's copy of its spine file
        from temporal.spine import file_problems

        report.problems += file_problems(loaded.spine, root)
    _report_unlisted(root, loaded, report)
    from_files = _recompute(root, loaded, intact, report)
    if source is not None:
        _check_database(loaded, source, from_files, actual, report)
    return report


def _check_shape(loaded: Manifest) -> None:
    """Refuse a manifest whose values have the wrong types, before any claim is read.

    Its checksum is intact (anyone can recompute it), so nothing else has
    checked that a path is a string or a row count a number; one clear error
    instead of a crash deep in the comparison.
    """
    def wrong(what: str) -> ManifestError:
        return ManifestError(f"{loaded.path} is not a valid manifest: {what}")

    def count(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(loaded.as_of, str):
        raise wrong("as_of is not a string")
    if not isinstance(loaded.format, str):
        raise wrong("format is not a string")
    if not isinstance(loaded.writer, dict):
        raise wrong("writer is not an object")
    if not isinstance(loaded.content_digest, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in loaded.content_digest.items()):
        raise wrong("content_digest is not an object of strings")
    if not isinstance(loaded.schema, dict) or not all(
            isinstance(columns, list) and all(isinstance(c, dict) and isinstance(
                c.get("name"), str) for c in columns) for columns in loaded.schema.values()):
        raise wrong("schema is not an object of column lists")
    for name, value in (("tables", loaded.tables), ("unversioned", loaded.unversioned)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong(f"{name} is not a list of names")
    if loaded.query is not None and not isinstance(loaded.query, str):
        raise wrong("query is not a string")
    objects: dict[str, object] = {"spine": loaded.spine, "changes": loaded.changes}
    for name, shape in objects.items():
        if shape is not None and not isinstance(shape, dict):
            raise wrong(f"{name} is not an object")
    rows_per_file = loaded.writer.get("rows_per_file", 1)
    if not count(rows_per_file) or not rows_per_file:
        raise wrong("writer.rows_per_file is not a positive number")
    seen: set[str] = set()
    for entry in loaded.files:
        if not (isinstance(entry.path, str) and isinstance(entry.table, str)
                and isinstance(entry.sha256, str) and count(entry.rows)
                and count(entry.bytes)):
            raise wrong(f"the file entry {entry.path!r} has a value of the wrong type")
        normal = Path(entry.path).as_posix()
        if normal in seen:
            raise wrong(f"it lists {entry.path} twice")
        seen.add(normal)


def _confined(root: Path, relative: str) -> Path | None:
    """The file a manifest path names, or None if it points outside the export folder."""
    parts = Path(relative)
    if not relative or parts.is_absolute() or ".." in parts.parts or "\\" in relative:
        return None
    path = root / parts
    real_root = root.resolve()
    resolved = path.resolve()
    if resolved != real_root and real_root not in resolved.parents:
        return None
    return path


def _check_file(root: Path, entry: FileEntry, report: VerifyReport, actual: dict[str, str]
                ) -> bool:
    path = _confined(root, entry.path)
    if path is None:
        report.problems.append(f"manifest: the path {entry.path!r} points outside the export "
                               "folder; refusing to read it")
        return False
    if not path.is_file():
        report.problems.append(f"{entry.path}: missing")
        return False
    sha, size = file_sha256(path)
    actual[entry.path] = sha
    report.files_checked += 1
    if size != entry.bytes:
        report.problems.append(f"{entry.path}: {size} bytes, manifest says {entry.bytes}")
        return False
    if sha != entry.sha256:
        report.problems.append(f"{entry.path}: sha256 differs from the manifest")
        return False
    return True


def _report_unlisted(root: Path, loaded: Manifest, report: VerifyReport) -> None:
    listed = {Path(f.path) for f in loaded.files} | {Path(MANIFEST_NAME), Path(SIGNATURE_NAME)}
    if loaded.spine is not None and isinstance(loaded.spine.get("file"), str):
        listed.add(Path(loaded.spine["file"]))  # checked by its own sha256
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder).relative_to(root)
        for name in sorted(files) + sorted(d for d in dirs if (Path(folder) / d).is_symlink()):
            if here / name not in listed:
                report.problems.append(f"{(here / name).as_posix()}: not listed in the "
                                       "manifest")


def _recompute(root: Path, loaded: Manifest, intact: dict[str, bool], report: VerifyReport
               ) -> dict[str, str] | None:
    """Rows and content digests from the files; a problem for every claim they contradict.

    Returns the digests the files give (``all`` and ``table:NAME``), or None
    when some file could not be read.
    """
    algorithm = loaded.content_digest.get("algorithm", CSV_ROWS)
    digest_row = DIGEST_ROWS.get(algorithm)
    if digest_row is None:
        report.problems.append(f"manifest: unknown content digest algorithm {algorithm!r}")
        return None
    overall = hashlib.sha256()
    tables: dict[str, Any] = {}
    complete = True
    for entry in loaded.files:
        path = _confined(root, entry.path)
        if path is None or not path.is_file():
            complete = False
            continue
        schema = loaded.schema.get(entry.table, [])
        columns = [c["name"] for c in schema]
        types = [ColumnType.from_manifest(c) for c in schema]
        table_digest = tables.setdefault(entry.table, hashlib.sha256())
        rows = 0
        if loaded.format == "csv" and algorithm in THIS_ENCODING:
            lines: Iterator[bytes] = _canonical_csv_lines(path, columns)
        else:
            lines = (digest_row(v)
                     for v in _canonical_rows(path, loaded.format, columns, types))
        try:
            for line in lines:
                overall.update(line)
                table_digest.update(line)
                rows += 1
        except (ValueError, OSError, TemporalError) as error:
            blame = "manifest" if intact.get(entry.table) else entry.path
            report.problems.append(f"{blame}: {entry.path} does not read as the manifest "
                                   f"describes it ({error})")
            complete = False
            continue
        if rows != entry.rows and intact.get(entry.table):
            report.problems.append(f"manifest: claims {entry.rows:,} rows for {entry.path}; "
                                   f"the file holds {rows:,}")
    if not complete:
        return None
    per_table = {name: d.hexdigest() for name, d in tables.items()}
    for name in loaded.schema:
        per_table.setdefault(name, hashlib.sha256().hexdigest())
    found = {"all": overall.hexdigest() if algorithm in ALL_OVER_ROWS else all_digest(per_table),
             **{f"table:{name}": d for name, d in per_table.items()}}
    every_file_intact = all(intact.values())
    # CSV lines are digested as written; JSON lines and Parquet values are encoded
    # again, by this version's encoding.
    reencoded = loaded.format != "csv" and algorithm in OLDER_ENCODINGS
    for claim, value in loaded.content_digest.items():
        if claim == "algorithm":
            continue
        table = claim.removeprefix("table:")
        trusted = every_file_intact if claim == "all" else intact.get(table, True)
        if found.get(claim) != value and trusted:
            if reencoded:
                report.problems.append(f"manifest: {older_encoding(algorithm)}")
                return found
            what = "all tables" if claim == "all" else table
            report.problems.append(f"manifest: its content digest for {what} does not match "
                                   "the rows of its own files (the manifest was edited)")
    return found


_QUOTED = re.compile(r'"((?:[^"]|"")*)"', re.DOTALL)


def _csv_fields(record: str) -> list[str | None]:
    """One record of the canonical CSV: NULL is an empty field, every value is quoted."""
    values: list[str | None] = []
    pos, end = 0, len(record) - 1  # the record ends in its newline
    while True:
        if record.startswith('"', pos):
            match = _QUOTED.match(record, pos)
            if match is None:
                raise ValueError("an unterminated quoted field")
            values.append(match.group(1).replace('""', '"'))
            pos = match.end()
        else:
            values.append(None)
        if pos == end and record[pos] == "\n":
            return values
        if record[pos] != ",":
            raise ValueError(f"an unquoted value near {record[pos:pos + 20]!r}")
        pos += 1


def _csv_records(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        pending = ""
        for line in handle:
            pending += line
            if pending.count('"') % 2 == 0:  # a quoted newline keeps the record open
                if not pending.endswith("\n"):
                    raise ValueError("the last record has no newline")
                yield pending
                pending = ""
        if pending:
            raise ValueError("the file ends inside a quoted value")


def _canonical_csv_lines(path: Path, columns: list[str]) -> Iterator[bytes]:
    """A CSV part's data records, each checked to be canonical: then its bytes *are* the
    content digest's row (``csv_row`` of its values), with no need to decode them."""
    field = rb'(?:"(?:[^"]|"")*")?'
    record = re.compile(field + rb"(?:," + field + rb"){%d}\n" % (len(columns) - 1), re.DOTALL)
    with open(path, "rb") as handle:
        header = handle.readline()
        if header != csv_row(list(columns)):
            raise ValueError("its header is not the schema's columns")
        pending = b""
        for line in handle:
            pending += line
            if pending.count(b'"') % 2:  # a quoted newline keeps the record open
                continue
            if record.fullmatch(pending) is None:
                raise ValueError(f"a row is not canonical CSV of {len(columns)} columns: "
                                 f"{pending[:40]!r}")
            yield pending
            pending = b""
        if pending:
            raise ValueError("the file ends inside a quoted value")


def _canonical_rows(path: Path, fmt: str, columns: list[str], types: list[ColumnType]
                    ) -> Iterator[list[str | None]]:
    """Each row of an exported file as canonical values (the content digest's input).

    JSON lines and Parquet values are encoded by the column's type from the manifest
    (:func:`temporal.encoding.encoder`), as the export encoded the database's.
    """
    encoders = [canonical if t.encoding == OTHER else encoder(t) for t in types]
    if fmt == "csv":
        records = _csv_records(path)
        header = next(records, None)
        if header is None or _csv_fields(header) != columns:
            raise ValueError("its header is not the schema's columns")
        for record in records:
            values = _csv_fields(record)
            if len(values) != len(columns):
                raise ValueError(f"a row has {len(values)} values for {len(columns)} columns")
            yield values
    elif fmt == "jsonl":
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if not isinstance(row, dict) or list(row) != columns:
                    raise ValueError("a line's keys are not the schema's columns")
                yield [e(v) for e, v in zip(encoders, row.values(), strict=True)]
    elif fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("reading parquet needs pyarrow") from None
        data = pq.read_table(path)
        if data.column_names != columns:
            raise ValueError("its columns are not the schema's")
        for name, field, column_type in zip(columns, data.schema, types, strict=True):
            if str(field.type) != column_type.arrow:  # a reader would get other types
                raise ValueError(f"column {name} is {field.type}, not the manifest's "
                                 f"{column_type.arrow}")
        for batch in data.to_batches():
            lists = [column.to_pylist() for column in batch.columns]
            for i in range(batch.num_rows):
                yield [e(values[i]) for e, values in zip(encoders, lists, strict=True)]
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _check_database(loaded: Manifest, source: str | Engine, from_files: dict[str, str] | None,
                    actual: dict[str, str], report: VerifyReport) -> None:
    report.database_checked = True
    try:
        at = parse_time(loaded.as_of)
    except TemporalError:
        return  # verify() reported it, blaming the manifest
    with tempfile.TemporaryDirectory(prefix="temporal-verify-") as tmp:
        try:
            fresh = _reexport(loaded, source, Path(tmp) / "again", at)
        except ExportError as error:
            report.problems.append(f"database: {error}")
            return
    algorithm = loaded.content_digest.get("algorithm", CSV_ROWS)
    if algorithm in OLDER_ENCODINGS and (
            any(fresh.content_digest.get(claim) != value
                for claim, value in loaded.content_digest.items())
            or [f.sha256 for f in fresh.files] != [f.sha256 for f in loaded.files]):
        # The same rows may well be there, spelled by the older encoding: no blame.
        report.problems.append(f"database: not compared: {older_encoding(algorithm)}")
        return
    blamed = False
    for claim, value in loaded.content_digest.items():
        if claim == "algorithm" or fresh.content_digest.get(claim) == value:
            continue
        what = "all tables" if claim == "all" else claim.removeprefix("table:")
        files_say = from_files.get(claim) if from_files is not None else None
        if files_say is not None and files_say == fresh.content_digest.get(claim):
            report.problems.append(
                f"manifest: the database and the files agree on {what}, the manifest does not "
                "(the manifest was edited)")
        elif files_say == value:
            cause = "history was changed after the export"
            if loaded.unversioned:  # read as they are now, so they may have moved on
                cause += (", or what it reads unversioned changed "
                          f"({', '.join(loaded.unversioned)})")
            report.problems.append(
                f"database: the data as of {loaded.as_of} differs from the export ({what}); "
                f"{cause}")
        else:
            report.problems.append(
                f"database: the data as of {loaded.as_of} differs from the export ({what}), "
                "and the files no longer match the manifest")
        blamed = True
    theirs = {f.path: f.sha256 for f in fresh.files}
    for entry in loaded.files:
        if theirs.get(entry.path) == entry.sha256:
            continue
        if actual.get(entry.path) is not None and theirs.get(entry.path) == actual[entry.path]:
            report.problems.append(f"manifest: the database re-exports {entry.path} exactly as "
                                   "the file is; the manifest's checksum for it was edited")
        elif not blamed:
            report.problems.append(f"database: re-export of {entry.path} differs")


def _reexport(loaded: Manifest, source: str | Engine, out: Path, at: datetime) -> Manifest:
    """Export again what ``loaded`` describes: tables or a query as of its moment, a
    change feed, or a point-in-time join."""
    plan = ExportPlan(
        at=at, query=loaded.query, fmt=loaded.format,
        rows_per_file=loaded.writer.get("rows_per_file", ROWS_PER_FILE),
        digest=loaded.content_digest.get("algorithm", CSV_ROWS),
        unversioned=tuple(loaded.unversioned), changes=loaded.changes, spine=loaded.spine)
    if loaded.changes is not None:
        from temporal.changes import run_changes

        return run_changes(source, out, plan, tables=loaded.tables, wait=30.0)
    if loaded.spine is not None:
        from temporal.pitjoin import rerun_join

        assert loaded.path is not None
        return rerun_join(source, out, plan, loaded.path.parent,
                          name=next(iter(loaded.schema), "spine"), wait=30.0)
    return run_export(source, out, plan, tables=loaded.tables or None,
                      name=next(iter(loaded.schema), "query"), wait=30.0)


def load(manifest: str | Path, *, as_: str = "pandas", table: str | None = None) -> Any:
    """Verify an export, then load one table as a pandas DataFrame or pyarrow Table.

    Types come from the manifest's schema, whatever the format: decimals exact,
    integers and booleans nullable, instants as UTC timestamps, bytes as bytes;
    in pandas UUIDs are ``uuid.UUID`` and floats keep NaN apart from NULL.
    JSON documents stay their canonical text (``json.loads`` it), so a JSON
    ``null`` is not a missing value.
    """
    report = verify(manifest)
    if not report.ok:
        raise ManifestError("refusing to load an export that does not verify: "
                            + "; ".join(report.problems))
    loaded = read_manifest(manifest)
    assert loaded.path is not None
    held = list(dict.fromkeys(f.table for f in loaded.files))  # a query's or join's folder too
    name = table or (held[0] if len(held) == 1 else None)
    if name is None:
        raise ExportError(f"the export holds {', '.join(held)}; pass table=")
    paths = [loaded.path.parent / f.path for f in loaded.files if f.table == name]
    if not paths:
        raise ExportError(f"the export holds no table {name!r}")
    if as_ not in ("pandas", "pyarrow"):
        raise ExportError(f"as_ must be 'pandas' or 'pyarrow', not {as_!r}")
    columns = loaded.schema.get(name, [])
    names = [c["name"] for c in columns]
    types = [ColumnType.from_manifest(c) for c in columns]
    try:
        import pyarrow as pa

        parts = [columnar.read_part(p, loaded.format, names, types) for p in paths]
    except ImportError:
        raise ExportError("loading exports needs pyarrow: pip install 'temporal[parquet]'"
                          ) from None
    except columnar.ColumnarError as error:
        raise ExportError(f"{name}: {error}") from None
    table_data = pa.concat_tables(parts)
    return columnar.to_pandas(table_data, types) if as_ == "pandas" else table_data

"""Proving an export: its files against the manifest, and the manifest against the database.

``verify`` never raises for a mismatch; it returns a report listing every
problem (a missing file, a changed size or checksum, data whose history was
changed after the export). A manifest that was altered or cannot be read
raises :class:`~temporal.ManifestError`. ``load`` verifies first, then reads
an exported table into pandas or pyarrow, which is what a training script
does next.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from temporal import columnar
from temporal.encoding import ColumnType
from temporal.export import ROWS_PER_FILE, ExportError, ExportPlan, run_export
from temporal.manifest import CSV_ROWS, ManifestError, file_sha256, read_manifest


@dataclass
class VerifyReport:
    """What ``verify`` checked and what did not match; ``ok`` only when nothing."""

    manifest: Path
    files_checked: int = 0
    rows: int = 0
    database_checked: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(manifest: str | Path, source: str | Engine | None = None) -> VerifyReport:
    """Check an export against its manifest; with ``source``, re-export and compare.

    Never raises for a mismatch: the report lists every problem found. A
    manifest that cannot be read or was altered raises ManifestError.
    """
    loaded = read_manifest(manifest)
    assert loaded.path is not None
    report = VerifyReport(manifest=loaded.path, rows=loaded.rows)
    root = loaded.path.parent
    for entry in loaded.files:
        path = root / entry.path
        if not path.is_file():
            report.problems.append(f"{entry.path}: missing")
            continue
        sha, size = file_sha256(path)
        report.files_checked += 1
        if size != entry.bytes:
            report.problems.append(f"{entry.path}: {size} bytes, manifest says {entry.bytes}")
        elif sha != entry.sha256:
            report.problems.append(f"{entry.path}: sha256 differs from the manifest")
    if source is not None:
        report.database_checked = True
        with tempfile.TemporaryDirectory(prefix="temporal-verify-") as tmp:
            try:
                plan = ExportPlan(
                    at=datetime.fromisoformat(loaded.as_of.replace("Z", "+00:00")),
                    query=loaded.query, fmt=loaded.format,
                    rows_per_file=loaded.writer.get("rows_per_file", ROWS_PER_FILE),
                    digest=loaded.content_digest.get("algorithm", CSV_ROWS))
                fresh = run_export(source, Path(tmp), plan, tables=loaded.tables or None,
                                   name=next(iter(loaded.schema), "query"), wait=30.0)
            except ExportError as error:
                report.problems.append(f"database: {error}")
                return report
            for key, value in loaded.content_digest.items():
                if fresh.content_digest.get(key) != value:
                    what = "all tables" if key == "all" else key.removeprefix("table:")
                    report.problems.append(
                        f"database: the data as of {loaded.as_of} differs from the export "
                        f"({what}); history was changed after the export")
            theirs = {f.path: f.sha256 for f in fresh.files}
            for entry in loaded.files:
                if theirs.get(entry.path) != entry.sha256 and not any(
                        "differs from the export" in p for p in report.problems):
                    report.problems.append(f"database: re-export of {entry.path} differs")
    return report


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
    name = table or (loaded.tables[0] if len(loaded.tables) == 1 else None)
    if name is None:
        raise ExportError(f"the export holds {', '.join(loaded.tables)}; pass table=")
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

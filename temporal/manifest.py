"""The export manifest and the canonical encoding behind its content digest.

An export is only as trustworthy as its description. ``manifest.json`` says
what was exported (``as_of``, the tables or query, the format and the exact
writer settings, the schema, the ordering key), lists every data file with its
row count, size and sha256, and carries a **content digest**: a sha256 over a
canonical, format-free encoding of the rows (each row's canonical values as
one fully quoted CSV line), so the same data gives the same digest whether it
was written as CSV, JSON lines or Parquet. A last key,
``manifest_sha256``, checksums the manifest itself.

The manifest holds no wall-clock time and no connection URL: exporting the
same ``as_of`` again gives the same manifest, byte for byte, and never a
password.

Canonical values follow each column's SQL type (:mod:`temporal.encoding`);
the schema records, for every column, its SQL type, its encoding and its
Arrow type, so a reader can restore exact types.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporal.encoding import (
    ALL_OVER_ROWS,
    CSV_ROWS,
    CSV_ROWS_1,
    CSV_ROWS_2,
    DIGEST_ROWS,
    JSON_ROWS,
    OLDER_ENCODINGS,
    all_digest,
    canonical,
    csv_row,
    json_row,
)
from temporal.errors import TemporalError

__all__ = ["ALL_OVER_ROWS", "CSV_ROWS", "CSV_ROWS_1", "CSV_ROWS_2", "DIGEST_ROWS", "JSON_ROWS",
           "OLDER_ENCODINGS", "FileEntry", "Manifest", "ManifestError", "all_digest", "canonical",
           "csv_row", "json_row", "older_encoding", "read_manifest"]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(TemporalError):
    """A manifest or export that cannot be read or does not check out."""


@dataclass
class FileEntry:
    path: str  # relative to the manifest
    table: str
    rows: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """What an export wrote; ``to_json()`` is the manifest file's content."""

    as_of: str
    format: str
    writer: dict[str, Any]
    tables: list[str]
    query: str | None
    schema: dict[str, list[dict[str, Any]]]
    order_by: dict[str, list[str]]
    files: list[FileEntry]
    content_digest: dict[str, str]
    library: dict[str, str]
    database: dict[str, str]
    settings: dict[str, str]
    # Plain tables or views a query read as they were at export time (not reproducible).
    unversioned: list[str] = field(default_factory=list)
    # A change feed's window (``since``/``until``; ``as_of`` is ``until``), and a
    # point-in-time join's spine, keys and tables: keys present only in such exports.
    changes: dict[str, str] | None = None
    spine: dict[str, Any] | None = None
    path: Path | None = field(default=None, compare=False)

    def body(self) -> dict[str, Any]:
        body = {
            "format_version": FORMAT_VERSION,
            "as_of": self.as_of,
            "tables": self.tables,
            "query": self.query,
            "unversioned": self.unversioned,
            "format": self.format,
            "writer": self.writer,
            "schema": self.schema,
            "order_by": self.order_by,
            "files": [vars(f) for f in self.files],
            "content_digest": self.content_digest,
            "library": self.library,
            "database": self.database,
            "settings": self.settings,
        }
        if self.changes is not None:
            body["changes"] = self.changes
        if self.spine is not None:
            body["spine"] = self.spine
        return body

    def to_json(self) -> str:
        body = self.body()
        body["manifest_sha256"] = _self_checksum(body)
        return json.dumps(body, indent=2, sort_keys=False, ensure_ascii=False) + "\n"

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def write(self, out_dir: Path) -> Path:
        """Write ``manifest.json`` atomically (a crashed export never leaves one)."""
        target = out_dir / MANIFEST_NAME
        temporary = out_dir / f".{MANIFEST_NAME}.tmp"
        temporary.write_text(self.to_json(), encoding="utf-8")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        self.path = target
        return target


def _self_checksum(body: dict[str, Any]) -> str:
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load and self-check a manifest; ManifestError says what is wrong."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path} is not a readable manifest ({error})") from None
    if not isinstance(body, dict) or "manifest_sha256" not in body:
        raise ManifestError(f"{path} is not a temporal manifest (no manifest_sha256)")
    claimed = body.pop("manifest_sha256")
    if _self_checksum(body) != claimed:
        raise ManifestError(f"{path} was modified after it was written (its checksum differs)")
    if body.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path} has format_version {body.get('format_version')!r}; "
                            f"this library reads {FORMAT_VERSION}")
    try:
        return Manifest(
            as_of=body["as_of"], format=body["format"], writer=body["writer"],
            tables=body["tables"], query=body["query"], schema=body["schema"],
            order_by=body["order_by"], files=[FileEntry(**f) for f in body["files"]],
            content_digest=body["content_digest"], library=body["library"],
            database=body["database"], settings=body["settings"],
            unversioned=body.get("unversioned", []), changes=body.get("changes"),
            spine=body.get("spine"), path=path,
        )
    except (KeyError, TypeError) as error:
        raise ManifestError(f"{path} is missing or mangles a key ({error})") from None


def older_encoding(algorithm: str) -> str:
    """The one line for an export whose digest hashes an older canonical encoding."""
    return (f"exported by an older canonical encoding version ({algorithm!r}; this version "
            f"writes {CSV_ROWS!r}), so its digest cannot be compared with this version's: "
            "re-export it to compare")


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "temporal export manifest",
    "type": "object",
    "required": ["format_version", "as_of", "tables", "query", "format", "writer", "schema",
                 "order_by", "files", "content_digest", "library", "database", "settings",
                 "manifest_sha256"],
    "properties": {
        "format_version": {"const": FORMAT_VERSION},
        "as_of": {"type": "string", "description": "ISO-8601 UTC, microseconds, Z"},
        "tables": {"type": "array", "items": {"type": "string"}},
        "query": {"type": ["string", "null"]},
        "unversioned": {"type": "array", "items": {"type": "string"}, "description":
                        "plain tables or views the query read as they were at export time"},
        "format": {"enum": ["csv", "jsonl", "parquet"]},
        "writer": {"type": "object"},
        "schema": {"type": "object", "additionalProperties": {
            "type": "array", "items": {
                "type": "object", "required": ["name", "type", "encoding", "arrow"],
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string", "description": "the SQL type"},
                    "encoding": {"enum": ["integer", "boolean", "float", "decimal", "text",
                                          "timestamp_utc", "timestamp", "date", "time",
                                          "interval", "bytes", "uuid", "json", "array",
                                          "other"],
                                 "description": "how values are written (README: types)"},
                    "arrow": {"type": "string", "description": "the Arrow/Parquet type"},
                    "precision": {"type": "integer"}, "scale": {"type": "integer"},
                    "item": {"type": "object", "description": "an array's item type"}}}}},
        "order_by": {"type": "object",
                     "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "files": {"type": "array", "items": {
            "type": "object", "required": ["path", "table", "rows", "bytes", "sha256"],
            "properties": {"path": {"type": "string"}, "table": {"type": "string"},
                           "rows": {"type": "integer"}, "bytes": {"type": "integer"},
                           "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}},
        "content_digest": {"type": "object", "description":
                           "sha256 of the canonical rows, per table and 'all'"},
        "library": {"type": "object"},
        "database": {"type": "object", "description": "dialect and server version; no URL"},
        "settings": {"type": "object", "description": "session settings pinned for the read"},
        "changes": {"type": "object", "required": ["since", "until"], "description":
                    "a change feed: every change in (since, until]"},
        "spine": {"type": "object", "required": ["at", "join"], "description":
                  "a point-in-time join: the spine (query, or file with sha256), its time "
                  "column, each joined table's spine and key columns"},
        "manifest_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
}

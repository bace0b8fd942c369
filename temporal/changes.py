"""The change feed: what changed in temporal tables between two moments.

A temporal table already holds every version (its archive too), so the
changes in a window are derived from history rather than captured in
advance. Each version contributes up to two changes:

* where it starts, at ``created_at``: an ``insert``, or the
  ``update_postimage`` of an update when the key's previous version ended at
  that same moment;
* where it ends, at ``expired_at``: a ``delete``, or the ``update_preimage``
  of an update when the key's next version starts at that same moment.

A transaction writes at most one version per key, all stamped with its one
timestamp, so a key changes at most once per transaction (an update is its
pre- and postimage pair). ``changes(source, out_dir, since=t1, until=t2)``
exports every change in the half-open window ``(t1, t2]`` of each table - its
data columns plus ``_change_type`` and ``_commit_time`` (the transaction's
stamp) - ordered by commit time, key, then change type (``insert``,
``update_preimage``, ``update_postimage``, ``delete``), through the export
pipeline: the same manifest (recording ``since`` and ``until``), the same
writers, the same wait for late writers up to ``until``. The changes of a past
window never change again (later writes start and end versions after
``until``; archival moves versions without altering them), so the feed is
byte-reproducible and ``verify`` re-derives it from the database.

:func:`iter_changes` is the in-app form: the changes of one model, read in a
session's own transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    FromClause,
    Integer,
    Select,
    String,
    Table,
    Text,
    case,
    cast,
    exists,
    inspect,
    literal,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from temporal.archival import all_versions
from temporal.catalog import ARCHIVE_SUFFIX
from temporal.clock import aware, isoformat
from temporal.encoding import column_type, read_as_text
from temporal.errors import ExportError
from temporal.export import (
    _STREAM,
    FORMATS,
    ROWS_PER_FILE,
    ExportPlan,
    Progress,
    _Snapshot,
    _Source,
    _temporal_table,
    check_jobs,
    export_sources,
)
from temporal.manifest import Manifest
from temporal.model import CREATED_AT, EXPIRED_AT, key_columns
from temporal.query import temporal_table

CHANGE_TYPE = "_change_type"
COMMIT_TIME = "_commit_time"
#: The change types, in the order changes of one key at one moment are listed.
CHANGE_TYPES = ("insert", "update_preimage", "update_postimage", "delete")
_RANK = "_temporal_rank"


@dataclass(frozen=True)
class Change:
    """One change of one entity (from :func:`iter_changes`)."""

    change_type: str  # one of CHANGE_TYPES
    commit_time: datetime  # the stamp of the transaction that made it
    values: dict[str, Any]  # the version's data columns, by attribute name


def _copy_of(conn: Connection, table: Table, name: str) -> FromClause:
    """Every version of ``table`` (archive included) as a FROM named ``name``."""
    versions = all_versions(conn, table)
    if versions is table:
        return table.alias(name)
    return versions.element.subquery(name)  # type: ignore[attr-defined, no-any-return]


def feed_statement(conn: Connection, table: Table, since: datetime, until: datetime,
                   labels: dict[str, str] | None = None,
                   as_text: frozenset[str] = frozenset()) -> Select[Any]:
    """SELECT every change of ``table`` in ``(since, until]``: data columns (labelled by
    ``labels`` where given; those named in ``as_text`` read as their text),
    ``_change_type``, ``_commit_time``, in feed order."""
    data = [c.name for c in table.c if c.name not in (CREATED_AT, EXPIRED_AT)]
    for taken in (CHANGE_TYPE, COMMIT_TIME, _RANK):
        if taken in data:
            raise ExportError(f"{table.name} has a column named {taken}, which the change "
                              "feed adds; rename it to export its changes")
    key = [c.name for c in key_columns(table)]
    v, w = _copy_of(conn, table, "v"), _copy_of(conn, table, "w")
    same_key = [w.c[k] == v.c[k] for k in key]

    def branch(moment: str, neighbour: str, plain: str, paired: str) -> Select[Any]:
        # The neighbouring version meets this one exactly at the moment: an update.
        paired_here = exists().where(*same_key, w.c[neighbour] == v.c[moment])
        kind = case((paired_here, literal(paired, String)), else_=literal(plain, String))
        rank = case((paired_here, CHANGE_TYPES.index(paired)),
                    else_=CHANGE_TYPES.index(plain))
        return (select(*[v.c[c] for c in data], kind.label(CHANGE_TYPE),
                       v.c[moment].label(COMMIT_TIME), rank.cast(Integer).label(_RANK))
                .where(v.c[moment] > since, v.c[moment] <= until))

    union = union_all(branch(CREATED_AT, EXPIRED_AT, "insert", "update_postimage"),
                      branch(EXPIRED_AT, CREATED_AT, "delete", "update_preimage")
                      ).subquery("changes")
    names = labels or {}
    return (select(*[(cast(union.c[c], Text) if c in as_text else union.c[c])
                     .label(names.get(c, c)) for c in data],
                   union.c[CHANGE_TYPE], union.c[COMMIT_TIME])
            .order_by(union.c[COMMIT_TIME], *[union.c[k] for k in key], union.c[_RANK]))


def _window(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    since, until = aware(since, what="since"), aware(until, what="until")
    if since >= until:
        raise ExportError(f"since ({isoformat(since)}) must be before until "
                          f"({isoformat(until)}): the window (since, until] would be empty")
    return since, until


def _temporal_names(conn: Connection) -> list[str]:
    names = inspect(conn).get_table_names()
    found = []
    for name in names:
        if name.endswith(ARCHIVE_SUFFIX) and name[:-len(ARCHIVE_SUFFIX)] in names:
            continue
        try:
            _temporal_table(conn, name)
        except ExportError:
            continue
        found.append(name)
    return found


def _feed_source(conn: Connection, name: str, since: datetime, until: datetime) -> _Source:
    table = _temporal_table(conn, name)
    dialect = conn.dialect
    data = [c for c in table.c if c.name not in (CREATED_AT, EXPIRED_AT)]
    types = [column_type(c.type, dialect) for c in data]
    textual = read_as_text(dialect.name)  # as in an export
    as_text = frozenset(c.name for c, t in zip(data, types, strict=True)
                        if t.encoding in textual)
    stmt = feed_statement(conn, table, since, until, as_text=as_text)
    key = [c.name for c in key_columns(table)]

    def rows() -> Iterator[Sequence[Any]]:
        yield from conn.execute(stmt, execution_options=_STREAM)

    return _Source(
        name=name, columns=[c.name for c in data] + [CHANGE_TYPE, COMMIT_TIME],
        types=[*types, column_type(String(), dialect),
               column_type(table.c[CREATED_AT].type, dialect)],
        order_by=[COMMIT_TIME, *key, CHANGE_TYPE], rows=rows,
        reopen=lambda other: _feed_source(other, name, since, until),
    )


def changes(
    source: str | Engine,
    out_dir: str | Path,
    *,
    since: datetime,
    until: datetime,
    tables: Sequence[str] | None = None,
    format: str = "csv",
    force: bool = False,
    signing_key: bytes | None = None,
    rows_per_file: int = ROWS_PER_FILE,
    wait: float = 30.0,
    on_progress: Callable[[Progress], None] | None = None,
    jobs: int = 1,
) -> Manifest:
    """Export every change to ``tables`` (default: every temporal table) in
    ``(since, until]``, one folder per table, with a manifest; return it.

    ``until`` may not be in the future; the export waits (up to ``wait``
    seconds) for writers that could still commit a change at or before it.
    With ``signing_key``, ``manifest.sig`` signs the manifest. ``jobs`` tables are
    written at once on PostgreSQL, in one snapshot (as :func:`temporal.export`).
    """
    check_jobs(jobs)
    start, end = _window(since, until)
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if tables is not None and len(set(tables)) != len(tables):
        raise ExportError("a table is named twice")
    if rows_per_file < 1:
        raise ExportError("rows_per_file must be at least 1")
    plan = ExportPlan(at=end, query=None, fmt=format, rows_per_file=rows_per_file, force=force,
                      on_progress=on_progress, signing_key=signing_key,
                      changes={"since": isoformat(start), "until": isoformat(end)},
                      jobs=jobs)
    return run_changes(source, Path(out_dir), plan, tables=tables, wait=wait)


def run_changes(source: str | Engine, out: Path, plan: ExportPlan, *,
                tables: Sequence[str] | None, wait: float) -> Manifest:
    """The change feed that ``plan.changes`` describes (also what ``verify`` re-runs)."""
    assert plan.changes is not None
    since = datetime.fromisoformat(plan.changes["since"].replace("Z", "+00:00"))
    chosen: list[str] = sorted(tables) if tables is not None else []

    def sources(snapshot: _Snapshot) -> list[_Source]:
        conn = snapshot.conn
        if tables is None:
            chosen.extend(sorted(_temporal_names(conn)))
            if not chosen:
                raise ExportError("this database has no temporal tables")
        return [_feed_source(conn, name, since, plan.at) for name in chosen]

    return export_sources(source, out, plan, wait=wait, sources=sources, tables=chosen)


def iter_changes(session: Session, model: type[Any], *, since: datetime,
                 until: datetime | None = None) -> Iterator[Change]:
    """The changes of ``model`` in ``(since, until]`` (``until`` default: everything the
    session's transaction sees), in feed order, read in the session's transaction."""
    table = temporal_table(model)
    conn = session.connection()
    end = until if until is not None else datetime.max.replace(tzinfo=aware(since).tzinfo)
    start, end = _window(since, end)
    attrs = {prop.columns[0].name: prop.key for prop in inspect(model).column_attrs
             if prop.columns[0].table is table}
    data = [c.name for c in table.c if c.name not in (CREATED_AT, EXPIRED_AT)]
    stmt = feed_statement(conn, table, start, end, labels=attrs)
    for row in conn.execute(stmt):
        mapping = row._mapping
        yield Change(change_type=mapping[CHANGE_TYPE], commit_time=mapping[COMMIT_TIME],
                     values={attrs.get(c, c): mapping[attrs.get(c, c)] for c in data})

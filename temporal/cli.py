"""The ``temporal`` command: a thin typer layer over the library.

Each command parses its arguments, calls one library function and renders
the result. Every :class:`~temporal.TemporalError` (and a database that
cannot be reached) becomes one line on stderr and a non-zero exit, never a
traceback; passwords in URLs are never printed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy.exc import SQLAlchemyError

from temporal import archival, catalog, signing
from temporal._version import VERSION
from temporal.clock import format_duration, parse_duration, parse_time
from temporal.errors import TemporalError
from temporal.export import Progress, export, table_history
from temporal.verification import verify

DEFAULT_URL = "sqlite:///temporal.db"
URL_ENV = "TEMPORAL_DATABASE_URL"

# Plain click help: flags shown as flags, choices and defaults in the text,
# examples kept as written; it also reads well in a pipe.
app = typer.Typer(
    name="temporal",
    help="Time travel for ordinary SQL tables: versioned rows, as-of reads, "
    "reproducible exports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", metavar="URL", show_default=False,
                 help=f"Database URL (default: ${URL_ENV}, else {DEFAULT_URL}); "
                 "e.g. postgresql+psycopg://user@host/db."),
]


class Format(str, Enum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


# The options every command that writes an export folder shares (export, changes).
FormatOption = Annotated[Format, typer.Option("--format", help="File format.")]
ForceOption = Annotated[bool, typer.Option(
    "--force", help="Replace a previous export in --out (never anything else).")]
SigningKeyOption = Annotated[Path | None, typer.Option(
    "--signing-key-file", metavar="FILE", help="Sign the manifest with the key in FILE "
    "(HMAC-SHA256, written to manifest.sig).", show_default=False)]
JobsOption = Annotated[int, typer.Option(
    "--jobs", metavar="N", min=1, help="Tables written at once (PostgreSQL: each by its own "
    "connection, all in one snapshot); the files are the same for any N.")]


def database_url(url: str | None) -> str:
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def _version(value: bool) -> None:
    if value:
        typer.echo(f"temporal {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Time travel for ordinary SQL tables."""


@app.command("version", epilog="Example: temporal version")
def version_command() -> None:
    """Show the library, SQLAlchemy and Python versions."""
    import sqlalchemy

    typer.echo(f"temporal {VERSION} (SQLAlchemy {sqlalchemy.__version__}, "
               f"Python {sys.version.split()[0]})")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"temporal: error: {message}", err=True)
    raise typer.Exit(code)


def _progress() -> tuple[Callable[[Progress], None] | None, Callable[[], None]]:
    """On a terminal: rows done of the total, percent, rows/s and time left; nothing in pipes."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    bar = Bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
              MofNCompleteColumn(), TextColumn("rows"), TaskProgressColumn(),
              TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
              TextColumn("left"), TimeRemainingColumn(),
              transient=True, console=Console(stderr=True))
    bar.start()
    tasks: dict[str, Any] = {}
    started: dict[str, float] = {}

    def report(p: Progress) -> None:
        now = time.monotonic()
        if p.table not in tasks:
            tasks[p.table] = bar.add_task(p.table, total=p.total, rate="")
            started[p.table] = now
        elapsed = max(now - started[p.table], 1e-3)
        bar.update(tasks[p.table], completed=p.rows, total=p.total,
                   rate=f"{p.rows / elapsed:,.0f} rows/s")

    return report, bar.stop


@app.command("export", epilog="Example: temporal export --as-of 2026-03-01 --table customers "
             "--out train-2026-03 --url postgresql+psycopg://app@db/shop")
def export_command(
    as_of: Annotated[str, typer.Option("--as-of", metavar="TIME", help="The moment to export, "
                                       "ISO-8601 (2026-03-01, 2026-03-01T12:00:00Z); UTC "
                                       "unless it has an offset.")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Output directory: new, "
                                      "empty, or a previous export with --force.")],
    table: Annotated[list[str] | None, typer.Option("--table", metavar="NAME", help="A "
                                                    "temporal table to export; repeat for "
                                                    "several.")] = None,
    query: Annotated[str | None, typer.Option("--query", metavar="SQL", help="One SELECT to "
                                              "export instead of tables; temporal tables are "
                                              "seen as of --as-of.")] = None,
    name: Annotated[str | None, typer.Option("--name", metavar="NAME", help="Folder name for "
                                             "--query output (default query) or a join's "
                                             "(default spine).", show_default=False)] = None,
    unversioned: Annotated[list[str] | None, typer.Option(
        "--unversioned", metavar="NAME", help="A plain table or view --query may read as it "
        "is now (recorded in the manifest); repeat for several.")] = None,
    fmt: FormatOption = Format.csv,
    force: ForceOption = False,
    wait: Annotated[str, typer.Option("--wait", metavar="DURATION", help="How long to wait for "
                                      "writers that could still commit before --as-of.")
                    ] = "30s",
    signing_key_file: SigningKeyOption = None,
    spine: Annotated[Path | None, typer.Option(
        "--spine", metavar="FILE", help="Point-in-time join: a CSV or Parquet file of events "
        "(entity key, event time, labels).", show_default=False)] = None,
    spine_query: Annotated[str | None, typer.Option(
        "--spine-query", metavar="SQL", help="Point-in-time join: one SELECT giving the "
        "events instead; the plain tables it reads are recorded as unversioned.",
        show_default=False)] = None,
    at: Annotated[str | None, typer.Option(
        "--at", metavar="COLUMN", help="The spine's event-time column.", show_default=False)
    ] = None,
    join: Annotated[list[str] | None, typer.Option(
        "--join", metavar="TABLE=SPINE_COLUMN", help="A temporal table to join on its key "
        "(TABLE=COL1,COL2 for a composite key); repeat for several.", show_default=False)
    ] = None,
    jobs: JobsOption = 1,
    url: UrlOption = None,
) -> None:
    """Export tables (or one SELECT) as they were at --as-of, with a checksum manifest.

    With --spine or --spine-query, a point-in-time join instead: each spine row
    gets each --join table's columns as of its own --at time, never later.
    """
    joined = _join_option(join or [])
    pit = spine is not None or spine_query is not None or bool(joined) or at is not None
    if pit and (table or query or unversioned):
        fail("a point-in-time join (--spine/--spine-query) exports its spine; do not also "
             "pass --table, --query or --unversioned", 2)
    if pit and (spine is None) == (spine_query is None):
        fail("pass one spine: --spine FILE or --spine-query SQL", 2)
    if pit and (not at or not joined):
        fail("a point-in-time join needs --at COLUMN and at least one --join "
             "TABLE=SPINE_COLUMN", 2)
    if not pit and bool(table) == bool(query):
        fail("name tables with --table, or pass --query (not both)", 2)
    if unversioned and not query:
        fail("--unversioned applies to --query only", 2)
    moment = parse_time(as_of)
    seconds = parse_duration(wait).total_seconds()
    key = signing.read_key(signing_key_file) if signing_key_file is not None else None
    report, stop = _progress()
    try:
        manifest = export(database_url(url), out, as_of=moment, tables=table, query=query,
                          name=name, format=fmt.value, force=force,
                          unversioned=unversioned or (), signing_key=key,
                          wait=seconds, on_progress=report, spine=spine,
                          spine_query=spine_query, at=at, join=joined or None, jobs=jobs)
    finally:
        stop()
    assert manifest.path is not None
    digest = manifest.content_digest["all"][:16]
    typer.echo(f"exported {manifest.rows:,} rows as of {manifest.as_of} to "
               f"{manifest.path.parent} ({len(manifest.files)} files, content sha256 {digest})")


def _join_option(values: list[str]) -> dict[str, list[str]]:
    joined: dict[str, list[str]] = {}
    for value in values:
        table, sep, columns = value.partition("=")
        keys = [c.strip() for c in columns.split(",")]
        if not sep or not table.strip() or not all(keys):
            fail(f"--join {value!r}: write TABLE=SPINE_COLUMN (TABLE=COL1,COL2 for a "
                 "composite key)", 2)
        if table.strip() in joined:
            fail(f"--join names {table.strip()} twice", 2)
        joined[table.strip()] = keys
    return joined


@app.command("changes", epilog="Example: temporal changes --since 2026-03-01 --until "
             "2026-04-01 --table customers --out changes-march")
def changes_command(
    since: Annotated[str, typer.Option("--since", metavar="TIME", help="Changes after this "
                                       "moment (ISO-8601; UTC unless it has an offset), not "
                                       "at it.")],
    until: Annotated[str, typer.Option("--until", metavar="TIME", help="Changes up to and "
                                       "including this moment (not in the future).")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Output directory: new, "
                                      "empty, or a previous export with --force.")],
    table: Annotated[list[str] | None, typer.Option("--table", metavar="NAME", help="A "
                                                    "temporal table; repeat for several "
                                                    "(default: every one).")] = None,
    fmt: FormatOption = Format.csv,
    force: ForceOption = False,
    wait: Annotated[str, typer.Option("--wait", metavar="DURATION", help="How long to wait for "
                                      "writers that could still commit before --until.")
                    ] = "30s",
    signing_key_file: SigningKeyOption = None,
    jobs: JobsOption = 1,
    url: UrlOption = None,
) -> None:
    """Export every change in (--since, --until] with _change_type and _commit_time."""
    from temporal.changes import changes

    start, end = parse_time(since), parse_time(until)
    seconds = parse_duration(wait).total_seconds()
    key = signing.read_key(signing_key_file) if signing_key_file is not None else None
    report, stop = _progress()
    try:
        manifest = changes(database_url(url), out, since=start, until=end, tables=table,
                           format=fmt.value, force=force, signing_key=key, wait=seconds,
                           on_progress=report, jobs=jobs)
    finally:
        stop()
    assert manifest.path is not None
    digest = manifest.content_digest["all"][:16]
    window = manifest.changes or {}
    typer.echo(f"exported {manifest.rows:,} changes in ({window.get('since')}, "
               f"{window.get('until')}] of {len(manifest.tables)} table(s) to "
               f"{manifest.path.parent} (content sha256 {digest})")


@app.command("verify", epilog="Example: temporal verify train-2026-03 --url "
             "postgresql+psycopg://app@db/shop")
def verify_command(
    manifest: Annotated[Path, typer.Argument(metavar="MANIFEST", help="manifest.json, or its "
                                             "directory.")],
    url: Annotated[str | None, typer.Option(
        "--url", metavar="URL", help="Also re-export from this database and compare "
        f"(or ${URL_ENV}).", show_default=False)] = None,
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", metavar="FILE", help="Require a manifest.sig made with the key in FILE.",
        show_default=False)] = None,
) -> None:
    """Check every claim of an export: files, rows, content digest (and the database)."""
    source = url or os.environ.get(URL_ENV)
    key = signing.read_key(key_file) if key_file is not None else None
    report = verify(manifest, source, key=key)
    if report.ok:
        against = " and the database" if report.database_checked else ""
        signed = ", signature valid" if report.signature_checked else ""
        typer.echo(f"ok: {report.files_checked} files, {report.rows:,} rows match the "
                   f"manifest{against}{signed}")
        return
    for problem in report.problems:
        typer.echo(f"mismatch: {problem}", err=True)
    raise typer.Exit(1)


@app.command("history", epilog="Example: temporal history --table customers --key 42")
def history_command(
    table: Annotated[str, typer.Option("--table", metavar="NAME", help="A temporal table.")],
    key: Annotated[list[str], typer.Option("--key", metavar="VALUE", help="The entity key; "
                                           "repeat the option for each column of a composite "
                                           "key.")],
    url: UrlOption = None,
) -> None:
    """Print every version of one entity, oldest first."""
    columns, rows = table_history(database_url(url), table, key)
    if not rows:
        typer.echo(f"no versions of {table} {', '.join(key)}")
        return
    from rich.console import Console
    from rich.table import Table as RichTable

    view = RichTable(*columns, box=None, header_style="bold")
    for row in rows:
        view.add_row(*("" if v is None else str(v) for v in row))
    Console().print(view)


db_app = typer.Typer(help="The catalog of temporal tables (its schema and what it holds).",
                     no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")


@db_app.command("upgrade", epilog="Example: temporal db upgrade --url postgresql+psycopg://app@db/shop")
def db_upgrade_command(
    revision: Annotated[str, typer.Argument(metavar="REVISION", help="Target revision.")
                        ] = "head",
    url: UrlOption = None,
) -> None:
    """Create or upgrade the catalog tables; register temporal tables it does not list."""
    at = catalog.upgrade(database_url(url), revision)
    typer.echo(f"catalog at revision {at}")


@db_app.command("downgrade", epilog="Example: temporal db downgrade base")
def db_downgrade_command(
    revision: Annotated[str, typer.Argument(metavar="REVISION", help="Target revision "
                                            "(base removes the catalog).")],
    url: UrlOption = None,
) -> None:
    """Take the catalog back to an earlier revision."""
    at = catalog.downgrade(database_url(url), revision)
    typer.echo(f"catalog at revision {at or 'base (no catalog)'}")


@db_app.command("status", epilog="Example: temporal db status")
def db_status_command(url: UrlOption = None) -> None:
    """The catalog's revision and every temporal table: key, TTL, rows, size, and whether
    the database versions raw writers on it (guarded)."""
    state = catalog.status(database_url(url))
    if state.revision is None:
        typer.echo(f"catalog: none (run `temporal db upgrade`; head is {state.head})")
    else:
        behind = "" if state.revision == state.head else f" (head is {state.head}: upgrade)"
        typer.echo(f"catalog: revision {state.revision}{behind}")
    if not state.tables:
        typer.echo("no temporal tables")
        return
    from rich.console import Console
    from rich.table import Table as RichTable

    view = RichTable("table", "key", "ttl", "current rows", "history rows", "archived rows",
                     "size", "guarded", box=None, header_style="bold")
    for t in state.tables:
        name = t.table if t.registered else f"{t.table} (unregistered)"
        view.add_row(name, ", ".join(t.key), format_duration(t.ttl) if t.ttl else "none",
                     f"{t.current_rows:,}", f"{t.history_rows:,}",
                     "-" if t.archived_rows is None else f"{t.archived_rows:,}",
                     _size(t.size_bytes),
                     "yes" if t.guarded else "no (run `temporal db upgrade`)")
    Console(width=200).print(view)


def _size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size} B"


@app.command("ttl", epilog="Example: temporal ttl customers 90d")
def ttl_command(
    table: Annotated[str, typer.Argument(metavar="TABLE", help="A registered temporal table.")],
    ttl: Annotated[str | None, typer.Argument(metavar="DURATION", help="How long history "
                                              "stays in the table (90d, 12h); omit to show "
                                              "it.")] = None,
    none: Annotated[bool, typer.Option("--none", help="Keep history forever (no TTL).")
                    ] = False,
    url: UrlOption = None,
) -> None:
    """Show or change how long a table's history stays before `temporal archive` moves it."""
    if ttl is not None and none:
        fail("give a TTL or --none, not both", 2)
    source = database_url(url)
    if ttl is None and not none:
        entry = catalog.lookup(source, table)
    else:
        entry = catalog.set_ttl(source, table, None if none else parse_duration(ttl or ""))
    shown = format_duration(entry.ttl) if entry.ttl else "none (history is kept)"
    typer.echo(f"{entry.table}: ttl {shown}")


EXIT_BUSY = 75  # EX_TEMPFAIL: another archiver runs; try again later


@app.command("archive", epilog="Example: temporal archive --every 1h --json")
def archive_command(
    table: Annotated[list[str] | None, typer.Option("--table", metavar="NAME", help="Only "
                                                    "this registered table; repeat for "
                                                    "several.")] = None,
    ttl: Annotated[str | None, typer.Option("--ttl", metavar="DURATION", help="Override every "
                                            "table's TTL "
                                            "(90d, 12h); also archives tables without one.")
                   ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would move; move "
                                          "nothing.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, metavar="N", help="Versions "
                                            "per "
                                            "transaction.")] = archival.DEFAULT_BATCH_SIZE,
    every: Annotated[str | None, typer.Option("--every", metavar="DURATION", help="Keep running, "
                                              "once per this "
                                              "interval (1h); SIGTERM stops it cleanly.")
                     ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run.")] = False,
    url: UrlOption = None,
) -> None:
    """Move versions older than their table's TTL into <table>_archive.

    Exit status: 0 done (or nothing to do), 1 error, 2 bad usage, 75 another
    archiver is running (nothing moved; try later).
    """
    import signal
    import threading

    override = parse_duration(ttl) if ttl is not None else None
    interval = parse_duration(every).total_seconds() if every is not None else None
    if interval is not None and interval <= 0:
        fail("--every must be longer than 0s", 2)
    if interval is not None and interval > threading.TIMEOUT_MAX:
        fail(f"--every {every} is longer than this system can wait", 2)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    while True:
        try:
            summary = archival.archive(database_url(url), ttl=override, tables=table,
                                       dry_run=dry_run, batch_size=batch_size,
                                       should_stop=stop.is_set)
        except archival.ArchiverBusyError as error:
            typer.echo(f"temporal: {error}", err=True)
            if interval is None:
                raise typer.Exit(EXIT_BUSY) from None
        else:
            typer.echo(summary.to_json() if as_json else _archive_line(summary))
        if interval is None or stop.wait(interval) or stop.is_set():
            return


def _archive_line(summary: archival.ArchiveSummary) -> str:
    verb = "would archive" if summary.dry_run else "archived"
    parts = []
    for t in summary.tables:
        if t.skipped and t.skipped != "stopped":
            parts.append(f"{t.table}: skipped, {t.skipped}")
            continue
        oldest = f", oldest history left {t.oldest_remaining:%Y-%m-%d %H:%M:%S}Z" \
            if t.oldest_remaining else ""
        parts.append(f"{t.table}: {t.moved:,}{oldest}")
    head = (f"{verb} {summary.moved:,} versions in {summary.seconds:.1f}s "
            f"(longest batch {summary.longest_batch_seconds * 1000:.0f} ms)")
    if summary.stopped:
        head += ", stopped by signal"
    return head + ("; " + "; ".join(parts) if parts else "; no temporal tables")


def main() -> None:
    """Console entry point: user errors become one line and an exit code."""
    try:
        app()
    except TemporalError as error:
        typer.echo(f"temporal: error: {error}", err=True)
        sys.exit(1)
    except SQLAlchemyError as error:
        first = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        typer.echo(f"temporal: error: database error: {_masked(first)}", err=True)
        sys.exit(1)
    except OSError as error:  # a file the command was told to read or write
        where = f" {error.filename}" if error.filename else ""
        typer.echo(f"temporal: error:{where}: {error.strerror or error}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("temporal: interrupted", err=True)
        sys.exit(130)


def _masked(message: str) -> str:
    """A database message with the URL's password hidden, whichever URL was in use."""
    from temporal.database import hide_secrets

    url = next((a for i, a in enumerate(sys.argv) if i and sys.argv[i - 1] == "--url"), None)
    url = url or os.environ.get(URL_ENV)
    return hide_secrets(message, url) if url else message

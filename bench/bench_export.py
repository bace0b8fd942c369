"""Export speed and memory, as ratios against the physical limit measured in the same run.

    python bench/bench_export.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                 [--rows 1000000] [--rounds 3] [--memory-rows 5000000]
                                 [--skip-memory] [--skip-sqlite] [--only-sqlite]

The baseline is what no exporter can beat: a raw ``COPY (SELECT ...) TO STDOUT``
of the same rows, written to a file and hashed with sha256. In interleaved
rounds (baseline, then each export, again and again) it prints the median of
each export's time over the baseline's median:

* PostgreSQL, N rows: CSV (target <= 1.15x), JSON lines (<= 2x), Parquet (<= 2x);
* ``--query`` with a join / raw COPY of the same SQL (same as-of filter and ORDER BY)
  (target <= 1.5x);
* SQLite, N rows, CSV / the ``sqlite3`` command-line shell writing the same rows
  as CSV, hashed (target <= 2x);
* peak RSS of exporting ``--memory-rows`` rows in each format, each in a fresh
  process (target: within 200 MiB).

``--only-sqlite`` runs only the SQLite rounds (PostgreSQL still fills the rows).
A scratch database (named after this process) is created on the server and
dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import _scratch
from sqlalchemy import create_engine, text

AS_OF = datetime(2026, 6, 1, tzinfo=timezone.utc)
VALID = "created_at <= '{t}' AND (expired_at IS NULL OR expired_at > '{t}')"
TABLE_SQL = ("SELECT id, name, score, amount, seen FROM events WHERE " + VALID +
             " ORDER BY id, name, score, amount, seen")
JOIN = ("SELECT e.id, e.name, e.score, a.label FROM events e "
        "JOIN accounts a ON a.id = e.amount")
JOIN_RAW = ("SELECT e.id, e.name, e.score, a.label FROM "
            "(SELECT * FROM events WHERE " + VALID + ") e JOIN "
            "(SELECT * FROM accounts WHERE " + VALID + ") a ON a.id = e.amount "
            "ORDER BY 1, 2, 3, 4")
TARGETS = {"csv": 1.15, "jsonl": 2.0, "parquet": 2.0, "query": 1.5, "sqlite csv": 2.0}


def fill(url: str, rows: int) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in ("events", "accounts"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text(
            "CREATE TABLE events (id bigint NOT NULL, name text, score double precision, "
            "amount bigint, seen date, created_at timestamptz NOT NULL, expired_at timestamptz, "
            "PRIMARY KEY (id, created_at))"))
        conn.execute(text(
            "CREATE UNIQUE INDEX events_current ON events (id) WHERE expired_at IS NULL"))
        conn.execute(text(
            "INSERT INTO events SELECT g, 'event ' || g, g * 0.25, g % 1000, "
            "date '2026-01-01' + (g % 365), '2026-01-01', NULL "
            f"FROM generate_series(1, {rows}) AS g"))
        conn.execute(text(
            "CREATE TABLE accounts (id bigint NOT NULL, label text, "
            "created_at timestamptz NOT NULL, expired_at timestamptz, "
            "PRIMARY KEY (id, created_at))"))
        conn.execute(text(
            "INSERT INTO accounts SELECT g, 'account ' || g, '2026-01-01', NULL "
            "FROM generate_series(0, 999) AS g"))
        conn.execute(text("ANALYZE events"))
        conn.execute(text("ANALYZE accounts"))
    engine.dispose()


def raw_copy(url: str, sql: str, out: Path) -> float:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    start = time.perf_counter()
    digest = hashlib.sha256()
    copy_sql = f"COPY ({sql.format(t=AS_OF.isoformat())}) TO STDOUT WITH (FORMAT csv)"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, open(out, "wb") as handle, \
            cur.copy(copy_sql) as copy:
        for chunk in copy:
            handle.write(chunk)
            digest.update(chunk)
    return time.perf_counter() - start


def temporal_export(url: str, out: Path, fmt: str = "csv", query: str | None = None) -> float:
    from temporal import export

    start = time.perf_counter()
    if query is None:
        export(url, out, as_of=AS_OF, tables=["events"], format=fmt)
    else:
        export(url, out, as_of=AS_OF, query=query, name="joined", format=fmt)
    return time.perf_counter() - start


def sqlite_copy(pg_url: str, path: Path) -> None:
    """The same events in a SQLite file, registered as a temporal table."""
    import psycopg

    from temporal import catalog

    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE events (id BIGINT NOT NULL, name TEXT, score DOUBLE, "
               "amount BIGINT, seen DATE, created_at DATETIME NOT NULL, expired_at DATETIME, "
               "PRIMARY KEY (id, created_at))")
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute("SELECT id, name, score, amount, seen::text FROM events")
        while batch := cursor.fetchmany(50_000):
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, "
                           "'2026-01-01 00:00:00.000000', NULL)", batch)
    db.commit()
    db.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        catalog.ensure(conn)
        catalog.register(conn, "events", ["id"], None)
    engine.dispose()


def sqlite_cli(path: Path, out: Path) -> float:
    sql = TABLE_SQL.format(t="2026-06-01 00:00:00.000000")
    start = time.perf_counter()
    with open(out, "wb") as handle:
        subprocess.run(["sqlite3", "-csv", str(path), sql], stdout=handle, check=True)
    digest = hashlib.sha256()
    with open(out, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return time.perf_counter() - start


def sqlite_export(path: Path, out: Path) -> float:
    from temporal import export

    start = time.perf_counter()
    export(f"sqlite:///{path}", out, as_of=AS_OF, tables=["events"])
    return time.perf_counter() - start


def rounds(n: int, baseline: Callable[[Path], float], runs: dict[str, Callable[[Path], float]],
           tmp: Path) -> tuple[float, dict[str, float]]:
    """Medians of interleaved rounds: baseline, then each run, ``n`` times."""
    base: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(n):
        base.append(baseline(tmp / f"base{i}"))
        for name, run in runs.items():
            times[name].append(run(tmp / f"{name.replace(' ', '_')}{i}"))
        for child in tmp.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    return statistics.median(base), {k: statistics.median(v) for k, v in times.items()}


def report(name: str, rows: int, seconds: float, base: float) -> None:
    ratio = seconds / base
    target = TARGETS[name]
    print(f"  {name:<11} {rows / seconds:>11,.0f} rows/s  {ratio:5.2f}x  "
          f"(target <= {target})" + ("  ok" if ratio <= target else "  OVER"))


def peak_rss_child(url: str, rows: int, fmt: str) -> int:
    """Export ``rows`` rows (already in the database) in a fresh process; peak RSS, MiB."""
    script = (
        "import sys, json, tempfile, pathlib;"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r});"
        "import bench_export as b;"
        "d = tempfile.mkdtemp();"
        f"b.temporal_export({url!r}, pathlib.Path(d) / 'out', {fmt!r});"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0];"
        "print(json.dumps(int(hwm.split()[1])))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return int(json.loads(done.stdout.strip().splitlines()[-1])) // 1024


def postgresql_rounds(url: str, rows: int, n: int, tmp: Path) -> None:
    base, times = rounds(n, lambda out: raw_copy(url, TABLE_SQL, out), {
        fmt: (lambda out, fmt=fmt: temporal_export(url, out, fmt))  # type: ignore[misc]
        for fmt in ("csv", "jsonl", "parquet")}, tmp)
    print(f"PostgreSQL, {rows:,} rows, median of {n} interleaved rounds; "
          f"raw COPY + sha256: {rows / base:,.0f} rows/s")
    for fmt, seconds in times.items():
        report(fmt, rows, seconds, base)
    base, times = rounds(n, lambda out: raw_copy(url, JOIN_RAW, out), {
        "query": lambda out: temporal_export(url, out, "csv", JOIN)}, tmp)
    print(f"--query with a join / raw COPY of the same SQL ({rows / base:,.0f} rows/s):")
    report("query", rows, times["query"], base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-rows", type=int, default=5_000_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--only-sqlite", action="store_true")
    args = parser.parse_args()
    scratch = f"temporal_bench_export_{os.getpid()}"
    url = _scratch.create(args.url, scratch)
    try:
        fill(url, args.rows)
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            if not args.only_sqlite:
                postgresql_rounds(url, args.rows, args.rounds, tmp)
            if not args.skip_sqlite:
                db = tmp / "bench.sqlite"
                sqlite_copy(url, db)
                (tmp / "sqlite").mkdir()
                base, times = rounds(args.rounds, lambda out: sqlite_cli(db, out), {
                    "sqlite csv": lambda out: sqlite_export(db, out)}, tmp / "sqlite")
                print(f"SQLite CSV / the sqlite3 shell ({args.rows / base:,.0f} rows/s):")
                report("sqlite csv", args.rows, times["sqlite csv"], base)
        if not args.skip_memory and not args.only_sqlite:
            fill(url, args.memory_rows)
            for fmt in ("csv", "jsonl", "parquet"):
                peak = peak_rss_child(url, args.memory_rows, fmt)
                print(f"peak RSS, {fmt} export of {args.memory_rows:,} rows: {peak} MiB "
                      "(target <= 200)" + ("  ok" if peak <= 200 else "  OVER"))
    finally:
        _scratch.drop(args.url, scratch)


if __name__ == "__main__":
    main()

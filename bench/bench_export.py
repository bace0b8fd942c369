"""Export speed and memory on PostgreSQL, as ratios against baselines of the same run.

    python bench/bench_export.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                 [--rows 1000000] [--memory-rows 5000000]

* temporal CSV export of N rows as of T / a raw ``COPY (SELECT ...) TO STDOUT``
  of the same rows hashed with sha256 into a file (target <= 1.25);
* ``pandas.read_sql`` + ``to_csv`` / temporal export (target >= 5x faster);
* peak RSS of exporting ``--memory-rows`` rows vs N rows, each in a fresh
  process (flat memory: about the same peak).

A scratch database is created on the server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import _scratch
from sqlalchemy import create_engine, text

AS_OF = datetime(2026, 6, 1, tzinfo=timezone.utc)
QUERY = ("SELECT id, name, score, amount, seen FROM events WHERE created_at <= '{t}' "
         "AND (expired_at IS NULL OR expired_at > '{t}') ORDER BY id, name, score, amount, seen")


def fill(url: str, rows: int) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS events"))
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
        conn.execute(text("ANALYZE events"))
    engine.dispose()


def raw_copy(url: str, out: Path) -> float:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    start = time.perf_counter()
    digest = hashlib.sha256()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, open(out, "wb") as handle:
        sql = f"COPY ({QUERY.format(t=AS_OF.isoformat())}) TO STDOUT WITH (FORMAT csv)"
        with cur.copy(sql) as copy:
            for chunk in copy:
                handle.write(chunk)
                digest.update(chunk)
    return time.perf_counter() - start


def temporal_export(url: str, out: Path) -> float:
    from temporal import export

    start = time.perf_counter()
    export(url, out, as_of=AS_OF, tables=["events"])
    return time.perf_counter() - start


def pandas_export(url: str, out: Path) -> float:
    import pandas as pd

    engine = create_engine(url)
    start = time.perf_counter()
    with engine.connect() as conn:
        frame = pd.read_sql(text(QUERY.format(t=AS_OF.isoformat())), conn)
    frame.to_csv(out, index=False)
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed


def peak_rss_child(url: str, rows: int) -> int:
    """Export ``rows`` rows in a fresh process; its peak RSS in MiB."""
    script = (
        "import sys, json, tempfile, pathlib;"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r});"
        "import bench_export as b;"
        f"b.fill({url!r}, {rows});"
        "d = tempfile.mkdtemp();"
        f"b.temporal_export({url!r}, pathlib.Path(d) / 'out');"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0];"
        "print(json.dumps(int(hwm.split()[1])))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return int(json.loads(done.stdout.strip().splitlines()[-1])) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--memory-rows", type=int, default=5_000_000)
    parser.add_argument("--skip-pandas", action="store_true")
    args = parser.parse_args()
    url = _scratch.create(args.url, "temporal_bench_export")
    fill(url, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        copy_s = min(raw_copy(url, Path(tmp) / f"copy{i}.csv") for i in range(2))
        ours_s = min(temporal_export(url, Path(tmp) / f"t{i}") for i in range(2))
        print(f"export of {args.rows:,} rows: temporal {args.rows / ours_s:,.0f} rows/s, "
              f"raw COPY + sha256 {args.rows / copy_s:,.0f} rows/s")
        print(f"temporal / raw COPY: {ours_s / copy_s:.2f}x (target <= 1.25)"
              + ("  ok" if ours_s / copy_s <= 1.25 else "  OVER"))
        if not args.skip_pandas:
            pandas_s = pandas_export(url, Path(tmp) / "pandas.csv")
            print(f"pandas read_sql + to_csv / temporal: {pandas_s / ours_s:.2f}x "
                  f"(target >= 5)" + ("  ok" if pandas_s / ours_s >= 5 else "  SHORT"))
    small = peak_rss_child(url, args.rows)
    large = peak_rss_child(url, args.memory_rows)
    print(f"peak RSS: {small} MiB for {args.rows:,} rows, {large} MiB for "
          f"{args.memory_rows:,} rows ({large / small:.2f}x for "
          f"{args.memory_rows / args.rows:.0f}x the rows)")
    _scratch.drop(args.url, "temporal_bench_export")



if __name__ == "__main__":
    main()

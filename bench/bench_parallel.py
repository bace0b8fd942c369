"""Parallel exports: ``--jobs N`` against one job, and against N raw COPYs side by side.

    python bench/bench_parallel.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                   [--tables 4] [--rows 500000] [--rounds 3]
                                   [--jobs 2 4] [--format csv parquet]

``--tables`` tables of ``--rows`` rows each (versioned: every row has an
expired earlier version, so the as-of filter has work to do) are exported as
of one moment, in interleaved rounds: one job, then each ``--jobs`` value. It
prints the median speed-up over one job and, as the ceiling, the speed-up of
the same raw ``COPY ... TO STDOUT`` queries (hashed into files) run one after
another and then on N connections at once. Client and server share this
machine's cores, so the ceiling is the machine's, not the library's.

A scratch database (named after this process) is created and dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import _scratch
from sqlalchemy import create_engine, text

AS_OF = datetime(2026, 6, 1, tzinfo=timezone.utc)
VALID = "created_at <= '{t}' AND (expired_at IS NULL OR expired_at > '{t}')"


def fill(url: str, tables: int, rows: int) -> list[str]:
    engine = create_engine(url)
    names = [f"events{i}" for i in range(tables)]
    with engine.begin() as conn:
        for name in names:
            conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
            conn.execute(text(
                f"CREATE TABLE {name} (id bigint NOT NULL, name text, score double precision, "
                "amount numeric(12, 2), seen timestamptz, created_at timestamptz NOT NULL, "
                "expired_at timestamptz, PRIMARY KEY (id, created_at))"))
            conn.execute(text(f"CREATE UNIQUE INDEX {name}_current ON {name} (id) "
                              "WHERE expired_at IS NULL"))
            conn.execute(text(
                f"INSERT INTO {name} SELECT g, 'event ' || g || ' v' || v, g * 0.25 + v, "
                "g % 1000 + 0.5, timestamptz '2026-01-01' + g * interval '1 second', "
                "CASE WHEN v = 1 THEN timestamptz '2026-01-01' ELSE '2026-03-01' END, "
                "CASE WHEN v = 1 THEN timestamptz '2026-03-01' END "
                f"FROM generate_series(1, {rows}) AS g, generate_series(1, 2) AS v"))
            conn.execute(text(f"ANALYZE {name}"))
    engine.dispose()
    return names


def copy_sql(name: str) -> str:
    valid = VALID.format(t=AS_OF.isoformat())
    return (f"COPY (SELECT id, name, score, amount, seen FROM {name} WHERE {valid} "
            "ORDER BY id) TO STDOUT WITH (FORMAT csv)")


def raw_copies(url: str, names: list[str], jobs: int, out: Path) -> float:
    """The ceiling: each table's COPY hashed into a file, ``jobs`` at a time."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    out.mkdir()

    def one(name: str) -> None:
        digest = hashlib.sha256()
        with psycopg.connect(dsn) as conn, conn.cursor() as cur, \
                open(out / f"{name}.csv", "wb") as handle, cur.copy(copy_sql(name)) as copy:
            for chunk in copy:
                handle.write(chunk)
                digest.update(chunk)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, names))
    return time.perf_counter() - start


def temporal_export(url: str, names: list[str], jobs: int, fmt: str, out: Path) -> float:
    from temporal import export

    start = time.perf_counter()
    export(url, out, as_of=AS_OF, tables=names, format=fmt, jobs=jobs)
    return time.perf_counter() - start


def medians(n: int, runs: dict[str, Callable[[Path], float]], tmp: Path) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(n):
        for name, run in runs.items():
            times[name].append(run(tmp / f"{name}-{i}"))
            for child in tmp.iterdir():
                shutil.rmtree(child)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--format", nargs="+", default=["csv", "parquet"],
                        choices=["csv", "jsonl", "parquet"])
    args = parser.parse_args()
    scratch = f"temporal_bench_parallel_{os.getpid()}"
    url = _scratch.create(args.url, scratch)
    try:
        names = fill(url, args.tables, args.rows)
        total = args.tables * args.rows
        print(f"{args.tables} tables x {args.rows:,} rows as of one moment ({total:,} rows), "
              f"{os.cpu_count()} cores shared by client and server; medians of "
              f"{args.rounds} interleaved rounds")
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            runs: dict[str, Callable[[Path], float]] = {}
            for jobs in [1, *args.jobs]:
                runs[f"raw{jobs}"] = (lambda out, j=jobs:  # type: ignore[misc]
                                      raw_copies(url, names, j, out))
                for fmt in args.format:
                    runs[f"{fmt}{jobs}"] = (lambda out, j=jobs, f=fmt:  # type: ignore[misc]
                                            temporal_export(url, names, j, f, out))
            got = medians(args.rounds, runs, tmp)
            for kind in ["raw", *args.format]:
                label = "raw COPY" if kind == "raw" else f"export {kind}"
                one = got[f"{kind}1"]
                cells = "  ".join(f"--jobs {j}: {one / got[f'{kind}{j}']:.2f}x"
                                  for j in args.jobs)
                print(f"  {label:<15} one job {one:6.2f}s ({total / one:,.0f} rows/s); "
                      f"speed-up {cells}")
    finally:
        _scratch.drop(args.url, scratch)


if __name__ == "__main__":
    main()

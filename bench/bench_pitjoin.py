"""Point-in-time join speed on PostgreSQL, as ratios against baselines of the same run.

    python bench/bench_pitjoin.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                  [--spine 500000] [--keys 200000] [--versions-per-key 10]

A spine of ``--spine`` label events (entity, event time, label) joined to a
temporal feature table of ``--keys`` x ``--versions-per-key`` versions, every
result written to a file and hashed, all sorted the same way:

* temporal ``export(..., spine_query=..., at=..., join=...)`` (CSV) / a
  hand-written interval join (``created_at <= t AND (expired_at IS NULL OR
  expired_at > t)``) through ``COPY ... TO STDOUT`` (target <= 1.5);
* the "latest row before" LATERAL join (``ORDER BY created_at DESC LIMIT 1``,
  the pattern Feast uses on PostgreSQL) / temporal (target > 1: temporal faster);
* the same export from a CSV spine file (loaded into a temporary table, which
  the time includes) / the interval join, for reference;
* DuckDB's ASOF JOIN over the same rows, loaded into DuckDB beforehand (not
  timed), if the duckdb package is installed (``pip install duckdb``).

A scratch database is created on the server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import _scratch
from sqlalchemy import create_engine, text

AS_OF = datetime(2026, 12, 1, tzinfo=timezone.utc)  # after every version and label
SPINE = "SELECT example_id, entity, event_time, label FROM labels"
ORDER = "example_id, entity, event_time, label"
INTERVAL = (
    "SELECT l.example_id, l.entity, l.event_time, l.label, f.id, f.score, f.bucket "
    "FROM labels l LEFT JOIN features f ON f.id = l.entity AND f.created_at <= l.event_time "
    "AND (f.expired_at IS NULL OR f.expired_at > l.event_time) ORDER BY " + ORDER)
LATERAL = (
    "SELECT l.example_id, l.entity, l.event_time, l.label, f.id, f.score, f.bucket "
    "FROM labels l LEFT JOIN LATERAL (SELECT id, score, bucket FROM features f "
    "WHERE f.id = l.entity AND f.created_at <= l.event_time "
    "ORDER BY f.created_at DESC LIMIT 1) f ON true ORDER BY " + ORDER)


def fill(url: str, spine: int, keys: int, per_key: int) -> None:
    """Versions every 10 days per key, staggered by key; label events spread over the
    same year (some before a key's first version)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE features (id bigint NOT NULL, score double precision, "
            "bucket bigint, created_at timestamptz NOT NULL, expired_at timestamptz, "
            "PRIMARY KEY (id, created_at))"))
        conn.execute(text(
            "CREATE UNIQUE INDEX features_current ON features (id) WHERE expired_at IS NULL"))
        conn.execute(text(
            "INSERT INTO features SELECT k, (k * 7 + v) * 0.125, (k + v) % 100, "
            "timestamptz '2026-01-01' + make_interval(days => v * 10, mins => k % 1440), "
            f"CASE WHEN v < {per_key - 1} THEN timestamptz '2026-01-01' "
            "+ make_interval(days => (v + 1) * 10, mins => k % 1440) END "
            f"FROM generate_series(1, {keys}) AS k, generate_series(0, {per_key - 1}) AS v"))
        conn.execute(text(
            "CREATE TABLE labels (example_id bigint PRIMARY KEY, entity bigint NOT NULL, "
            "event_time timestamptz NOT NULL, label integer)"))
        conn.execute(text(
            "INSERT INTO labels SELECT g, 1 + (g::bigint * 7919) % " + str(keys) + ", "
            "timestamptz '2025-12-31' + make_interval(secs => (g::bigint * 104729) % "
            f"{(per_key * 10 + 5) * 86400}), g % 2 FROM generate_series(1, {spine}) AS g"))
        conn.execute(text("ANALYZE features"))
        conn.execute(text("ANALYZE labels"))
    engine.dispose()


def copy_to_file(url: str, query: str, out: Path) -> float:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    start = time.perf_counter()
    digest = hashlib.sha256()
    sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv)"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, open(out, "wb") as handle, \
            cur.copy(sql) as copy:
        for chunk in copy:
            handle.write(chunk)
            digest.update(chunk)
    return time.perf_counter() - start


def temporal_join(url: str, out: Path) -> float:
    from temporal import export

    start = time.perf_counter()
    export(url, out, as_of=AS_OF, spine_query=SPINE, at="event_time",
           join={"features": "entity"})
    return time.perf_counter() - start


def temporal_file_join(url: str, tmp: Path) -> float:
    """The same join from a CSV spine (loaded into a temporary table first)."""
    import psycopg

    from temporal import export

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    sql = ("COPY (SELECT example_id, entity, to_char(event_time AT TIME ZONE 'UTC', "
           "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS event_time, label FROM labels) "
           "TO STDOUT WITH (FORMAT csv, HEADER)")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, \
            open(tmp / "spine.csv", "wb") as handle, cur.copy(sql) as copy:
        for chunk in copy:
            handle.write(chunk)
    start = time.perf_counter()
    export(url, tmp / "file-join", as_of=AS_OF, spine=tmp / "spine.csv", at="event_time",
           join={"features": "entity"})
    return time.perf_counter() - start


def duckdb_asof(url: str, tmp: Path) -> float | None:
    try:
        import duckdb
    except ImportError:
        return None
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    for table in ("labels", "features"):  # the same rows, as files DuckDB reads offline
        sql = f"COPY {table} TO STDOUT WITH (FORMAT csv, HEADER)"
        with psycopg.connect(dsn) as conn, conn.cursor() as cur, \
                open(tmp / f"{table}.csv", "wb") as handle, cur.copy(sql) as copy:
            for chunk in copy:
                handle.write(chunk)
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    for table in ("labels", "features"):
        db.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv_auto('{tmp}/{table}.csv')")
    query = ("SELECT l.example_id, l.entity, l.event_time, l.label, f.id, f.score, f.bucket "
             "FROM labels l ASOF LEFT JOIN features f ON l.entity = f.id "
             "AND l.event_time >= f.created_at ORDER BY " + ORDER)
    start = time.perf_counter()
    db.execute(f"COPY ({query}) TO '{tmp}/duck.csv' (FORMAT csv)")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--spine", type=int, default=500_000)
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--versions-per-key", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    url = _scratch.create(args.url, "temporal_bench_pitjoin")
    try:
        fill(url, args.spine, args.keys, args.versions_per_key)
        versions = args.keys * args.versions_per_key
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            interval_s = ours_s = float("inf")
            for i in range(args.rounds):  # interleaved, best of each
                interval_s = min(interval_s, copy_to_file(url, INTERVAL, tmp / f"i{i}.csv"))
                ours_s = min(ours_s, temporal_join(url, tmp / f"t{i}"))
            lateral_s = copy_to_file(url, LATERAL, tmp / "lateral.csv")
            file_s = temporal_file_join(url, tmp)
            duck_s = duckdb_asof(url, tmp)
        print(f"{args.spine:,} spine rows x {versions:,} versions: temporal {ours_s:.2f}s, "
              f"interval join {interval_s:.2f}s, LATERAL latest-before {lateral_s:.2f}s"
              + (f", DuckDB ASOF {duck_s:.2f}s" if duck_s is not None else ""))
        ratio = ours_s / interval_s
        print(f"temporal / hand-written interval join: {ratio:.2f}x (target <= 1.5)"
              + ("  ok" if ratio <= 1.5 else "  OVER"))
        print(f"temporal from a CSV spine file / interval join: {file_s / interval_s:.2f}x "
              "(includes loading the file)")
        print(f"LATERAL latest-before / temporal: {lateral_s / ours_s:.2f}x (target > 1)"
              + ("  ok" if lateral_s > ours_s else "  SLOWER"))
        if duck_s is not None:
            print(f"DuckDB ASOF JOIN / temporal: {duck_s / ours_s:.2f}x (for reference; "
                  "DuckDB reads its own in-memory copy)")
        else:
            print("DuckDB: not installed (pip install duckdb), not measured")
    finally:
        _scratch.drop(args.url, "temporal_bench_pitjoin")


if __name__ == "__main__":
    main()

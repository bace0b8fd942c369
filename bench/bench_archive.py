"""Archival speed and lock time on PostgreSQL, as ratios against a hand-written loop.

    python bench/bench_archive.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                  [--versions 1000000] [--batch-size 5000] [--rounds 1]

Two identical tables each hold ``--versions`` expired versions (ten per key)
plus one current row per key. ``temporal.archive()`` moves one table's
history into its archive; the baseline moves the other's with the loop people
write by hand, in its fastest form: ``WITH moved AS (DELETE ... WHERE ctid =
ANY(ARRAY(SELECT ctid ... LIMIT n)) RETURNING *) INSERT INTO archive SELECT *
FROM moved`` until nothing is left, one transaction per batch, the same batch
size, into a plain archive table. (The common ``(id, created_at) IN (SELECT
... LIMIT n)`` form ran at about a fifth of this speed at 1M versions.)

Printed: versions moved per second for both and their ratio (target >= 0.8),
the longest time one batch held its locks (target < 100 ms at the default
batch size), and the slowest single-row update a concurrent writer saw during
the temporal run against its median outside it.

A scratch database is created on the server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from datetime import timedelta

import _scratch
from sqlalchemy import Engine, create_engine, text

from temporal import archive
from temporal.archival import DEFAULT_BATCH_SIZE

PER_KEY = 10


def fill(engine: Engine, table: str, versions: int) -> None:
    keys = versions // PER_KEY
    with engine.begin() as conn:
        conn.execute(text(
            f"CREATE TABLE {table} (id bigint NOT NULL, name text, score double precision, "
            "tier text, created_at timestamptz NOT NULL, expired_at timestamptz, "
            "PRIMARY KEY (id, created_at))"))
        conn.execute(text(f"CREATE UNIQUE INDEX {table}_current ON {table} (id) "
                          "WHERE expired_at IS NULL"))
        conn.execute(text(f"CREATE INDEX {table}_expired_at ON {table} (expired_at) "
                          "WHERE expired_at IS NOT NULL"))
        # ten versions a day apart, ending 100 days ago, then a current one
        conn.execute(text(
            f"INSERT INTO {table} SELECT k, 'customer ' || k || ' v' || v, k * 0.5 + v, "
            "CASE WHEN v % 2 = 0 THEN 'basic' ELSE 'gold' END, "
            "now() - interval '110 days' + v * interval '1 day', "
            "CASE WHEN v < :per THEN now() - interval '109 days' + v * interval '1 day' END "
            f"FROM generate_series(1, {keys}) AS k, generate_series(0, :per) AS v"
        ), {"per": PER_KEY})
        conn.execute(text(f"ANALYZE {table}"))


def register(engine: Engine, table: str) -> None:
    from temporal import catalog

    with engine.begin() as conn:
        catalog.register(conn, table, ["id"], None)


def hand_written(engine: Engine, table: str, batch: int) -> tuple[int, float, float]:
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table}_arch (LIKE {table} INCLUDING ALL)"))
    moved = 0
    longest = 0.0
    start = time.perf_counter()
    while True:
        began = time.perf_counter()
        with engine.begin() as conn:
            n = conn.execute(text(
                f"WITH moved AS (DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {table} WHERE expired_at < now() - interval "
                f"'30 days' LIMIT :n)) RETURNING *) INSERT INTO {table}_arch SELECT * FROM moved"
            ), {"n": batch}).rowcount
        longest = max(longest, time.perf_counter() - began)
        moved += n
        if n < batch:
            break
    return moved, time.perf_counter() - start, longest


class Writer(threading.Thread):
    """Updates one current row per transaction, timing each, until stopped."""

    def __init__(self, engine: Engine, table: str, keys: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.table, self.keys = engine, table, keys
        self.stop = threading.Event()
        self.times: list[float] = []

    def run(self) -> None:
        n = 0
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                n += 1
                began = time.perf_counter()
                conn.execute(text(f"UPDATE {self.table} SET score = :s WHERE id = :k "
                                  "AND expired_at IS NULL"), {"s": n, "k": 1 + n % self.keys})
                conn.commit()
                self.times.append(time.perf_counter() - began)


def run_theirs(engine: Engine, table: str, keys: int, batch: int) -> tuple[int, float, float]:
    """The hand-written loop, under the same concurrent writer as temporal's run."""
    background = Writer(engine, table, keys)
    background.start()
    try:
        return hand_written(engine, table, batch)
    finally:
        background.stop.set()
        background.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--versions", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    url = _scratch.create(args.url, "temporal_bench_archive")
    engine = create_engine(url)
    ratios, longest_ours, longest_theirs, ours_rates, theirs_rates = [], [], [], [], []
    writer_note = ""
    batch_times: list[float] = []
    try:
        for round_ in range(args.rounds):
            ours, theirs = f"ours{round_}", f"theirs{round_}"
            fill(engine, ours, args.versions)
            fill(engine, theirs, args.versions)
            register(engine, ours)

            keys = args.versions // PER_KEY
            quiet = Writer(engine, ours, keys)  # the writer's latency without archival
            quiet.start()
            time.sleep(1.0)
            quiet.stop.set()
            quiet.join()

            if round_ % 2:  # alternate which goes first
                moved_b, seconds_b, held_b = run_theirs(engine, theirs, keys, args.batch_size)
            writer = Writer(engine, ours, keys)
            writer.start()
            start = time.perf_counter()
            summary = archive(engine, tables=[ours], ttl=timedelta(days=30),
                              batch_size=args.batch_size,
                              on_batch=lambda r: batch_times.append(r.last_batch_seconds))
            seconds_a = time.perf_counter() - start
            writer.stop.set()
            writer.join()
            if not round_ % 2:
                moved_b, seconds_b, held_b = run_theirs(engine, theirs, keys, args.batch_size)
            moved_a = summary.moved
            assert moved_a == moved_b == args.versions, (moved_a, moved_b)
            rate_a, rate_b = moved_a / seconds_a, moved_b / seconds_b
            ours_rates.append(rate_a)
            theirs_rates.append(rate_b)
            ratios.append(rate_a / rate_b)
            longest_ours.append(summary.longest_batch_seconds)
            longest_theirs.append(held_b)
            writer_note = (f"writer during archival: {len(writer.times)} updates, slowest "
                           f"{max(writer.times) * 1000:.1f} ms, median "
                           f"{statistics.median(writer.times) * 1000:.2f} ms (without "
                           f"archival: median {statistics.median(quiet.times) * 1000:.2f} ms, "
                           f"slowest {max(quiet.times) * 1000:.1f} ms)")
            print(f"round {round_ + 1}: temporal {rate_a:,.0f} versions/s, hand-written "
                  f"{rate_b:,.0f} versions/s, ratio {rate_a / rate_b:.2f}; longest batch "
                  f"{summary.longest_batch_seconds * 1000:.1f} ms vs {held_b * 1000:.1f} ms",
                  flush=True)
    finally:
        engine.dispose()
        _scratch.drop(args.url, "temporal_bench_archive")
    print(f"\n{args.versions:,} expired versions, batch size {args.batch_size:,}:")
    print(f"  moved per second, temporal / hand-written loop: "
          f"{statistics.median(ratios):.2f} (target >= 0.8; "
          f"{statistics.median(ours_rates):,.0f} vs {statistics.median(theirs_rates):,.0f})")
    ordered = sorted(batch_times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"  longest batch holding locks: {max(longest_ours) * 1000:.1f} ms "
          f"(target < 100 ms; hand-written loop {max(longest_theirs) * 1000:.1f} ms); "
          f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over "
          f"{len(ordered)} batches")
    print(f"  {writer_note}")


if __name__ == "__main__":
    main()

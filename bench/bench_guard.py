"""What the overlap guard costs on PostgreSQL, and what the alternative would have.

    python bench/bench_guard.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Three shapes of the same temporal table (50,000 current rows), interleaved over
``--rounds`` rounds, each figure a median ratio against the unguarded table:

* ``trigger``: the library's guard (``temporal/guard.py``), statement-level
  triggers over transition tables plus a CHECK on the period;
* ``exclusion``: ``EXCLUDE USING gist (id WITH =, tstzrange(created_at,
  expired_at) WITH &&)`` with ``btree_gist``, the other way to have the
  database refuse overlaps;
* ``none``: neither (the baseline).

Figures: a bulk ``update()`` of every row, a bulk ``delete()`` of every row, and
ORM load + change + commit of 5,000 rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import _scratch
import bench_versioning as shared
from sqlalchemy import Engine, create_engine, delete, select, update
from sqlalchemy.orm import Session

from temporal import guard

ROWS = 50_000
ORM_ROWS = 5_000


def shape(engine: Engine, base: Any, item: Any, mode: str, rows: int) -> None:
    shared.fresh(engine, base)
    with engine.begin() as conn:
        if mode != "trigger":
            guard.remove(conn, "items")
        if mode == "exclusion":
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS btree_gist")
            conn.exec_driver_sql("ALTER TABLE items ADD CONSTRAINT items_gist EXCLUDE USING "
                                 "gist (id WITH =, tstzrange(created_at, expired_at) WITH &&)")
    shared.fast_fill(engine, item, rows)


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def figures(engine: Engine, base: Any, item: Any, mode: str) -> dict[str, float]:
    out = {}
    shape(engine, base, item, mode, ROWS)
    with Session(engine) as s, s.begin():
        out["bulk update"] = timed(lambda: s.execute(
            update(item).where(item.id >= 0).values(value=item.value + 1)))
    with Session(engine) as s, s.begin():
        out["bulk delete"] = timed(lambda: s.execute(delete(item).where(item.id >= 0)))
    shape(engine, base, item, mode, ORM_ROWS)

    def orm() -> None:
        with Session(engine) as s:
            for obj in s.scalars(select(item)):
                obj.value += 1
            s.commit()

    out["ORM 5,000 rows"] = timed(orm)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    name = f"temporal_bench_guard_{os.getpid()}"
    url = _scratch.create(args.url, name)
    engine = create_engine(url)
    base, item = shared.models("temporal")
    ratios: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(args.rounds):
            baseline = figures(engine, base, item, "none")
            for mode in ("trigger", "exclusion"):
                for label, seconds in figures(engine, base, item, mode).items():
                    ratios.setdefault((mode, label), []).append(seconds / baseline[label])
    finally:
        engine.dispose()
        _scratch.drop(args.url, name)
    for (mode, label), values in ratios.items():
        print(f"{label}, guard {mode} / no guard: {statistics.median(values):.2f}x "
              f"[{min(values):.2f}-{max(values):.2f}]")


if __name__ == "__main__":
    main()

"""What the overlap guard costs on PostgreSQL, its alternatives, and the floor under a delete.

    python bench/bench_guard.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                [--rounds 3] [--only WORD ...]

Four shapes of the same temporal table (50,000 current rows), interleaved over
``--rounds`` rounds, each figure a median ratio against the unguarded table:

* ``trigger``: the library's guard (``temporal/guard.py``): a statement-level
  probe over the inserted rows, a row-level update trigger whose ``WHEN`` clause
  skips updates that only shorten a period (expires), a CHECK on the period;
* ``statement``: the guard before (version 1): the update trigger is
  statement-level too and probes every updated row (a transition table);
* ``exclusion``: ``EXCLUDE USING gist (id WITH =, tstzrange(created_at,
  expired_at) WITH &&)`` with ``btree_gist``, the other way to have the
  database refuse overlaps;
* ``none``: neither (the baseline).

Figures: a bulk ``update()`` of every row, a bulk ``delete()`` of every row, and
ORM load + change + commit of 5,000 rows.

Then the floor under a versioned delete: bare SQL (no library, no triggers) on
tables of 50,000 rows against a bare ``DELETE`` of a plain table with a primary key.
A delete only marks each row; any UPDATE writes a new tuple, and unless the
updated column is in no index (predicates included) and the page has room (a
HOT update), a new entry in every index whose predicate the new tuple meets:

* the cheapest UPDATE there is: one column in no index, ``fillfactor`` 50 (HOT);
* the same at ``fillfactor`` 100: the new tuple goes to another page (not HOT);
* the expire of a temporal table (``expired_at`` is in the current-row index's
  predicate, so never HOT: a new entry in the primary key and ``_expired_at``);
* the same table without its ``_expired_at`` index.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import _scratch
import bench_versioning as shared
from sqlalchemy import Engine, create_engine, delete, select, text, update
from sqlalchemy.orm import Session

from temporal import guard

ROWS = 50_000
ORM_ROWS = 5_000
MODES = ("trigger", "statement", "exclusion")


def shape(engine: Engine, base: Any, item: Any, mode: str, rows: int) -> None:
    shared.fresh(engine, base)
    with engine.begin() as conn:
        if mode not in ("trigger", "statement"):
            guard.remove(conn, "items")
        if mode == "statement":  # version 1: every updated row probed, set-based
            conn.exec_driver_sql("DROP TRIGGER items_no_overlap_update ON items")
            conn.exec_driver_sql("CREATE TRIGGER items_no_overlap_update AFTER UPDATE ON items "
                                 "REFERENCING NEW TABLE AS temporal_written FOR EACH STATEMENT "
                                 "EXECUTE FUNCTION items_no_overlap()")
        if mode == "exclusion":
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS btree_gist")
            conn.exec_driver_sql("ALTER TABLE items ADD CONSTRAINT items_gist EXCLUDE USING "
                                 "gist (id WITH =, tstzrange(created_at, expired_at) WITH &&)")
    shared.fast_fill(engine, item, rows)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def figures(engine: Engine, base: Any, item: Any, mode: str,
            wanted: Callable[[str], bool]) -> dict[str, float]:
    out = {}
    if wanted("bulk update") or wanted("bulk delete"):
        shape(engine, base, item, mode, ROWS)
        with Session(engine) as s, s.begin():
            out["bulk update"] = timed(lambda: s.execute(
                update(item).where(item.id >= 0).values(value=item.value + 1)))
        shape(engine, base, item, mode, ROWS)  # a delete of the rows as loaded
        with Session(engine) as s, s.begin():
            out["bulk delete"] = timed(lambda: s.execute(delete(item).where(item.id >= 0)))
    if wanted("ORM"):
        shape(engine, base, item, mode, ORM_ROWS)

        def orm() -> None:
            with Session(engine) as s:
                for obj in s.scalars(select(item)):
                    obj.value += 1
                s.commit()

        out["ORM 5,000 rows"] = timed(orm)
    return out


# -- the floor: bare SQL ----------------------------------------------------------------

_COLUMNS = ("id integer NOT NULL, name varchar(50) NOT NULL, value integer NOT NULL, "
            "created_at timestamptz NOT NULL, expired_at timestamptz")
_FILL = ("INSERT INTO {t} SELECT i, 'item ' || i, i, '2026-01-01', NULL "
         f"FROM generate_series(0, {ROWS - 1}) AS i")
_EXPIRE = "UPDATE {t} SET expired_at = now() WHERE expired_at IS NULL"
FLOORS: dict[str, tuple[int, list[str], str]] = {
    # label: (fillfactor, DDL after the fill, the timed statement)
    "bare DELETE, plain table with a primary key": (
        100, ["ALTER TABLE {t} ADD PRIMARY KEY (id)"], "DELETE FROM {t}"),
    "cheapest UPDATE: one column in no index, fillfactor 50 (HOT)": (
        50, ["ALTER TABLE {t} ADD PRIMARY KEY (id)"], _EXPIRE),
    "UPDATE of one column in no index, fillfactor 100 (not HOT)": (
        100, ["ALTER TABLE {t} ADD PRIMARY KEY (id)"], _EXPIRE),
    "expire, a temporal table's indexes (never HOT)": (
        100, ["ALTER TABLE {t} ADD PRIMARY KEY (id, created_at)",
              "CREATE UNIQUE INDEX {t}_current ON {t} (id) WHERE expired_at IS NULL",
              "CREATE INDEX {t}_expired_at ON {t} (expired_at) WHERE expired_at IS NOT NULL"],
        _EXPIRE),
    "expire, without the _expired_at index": (
        100, ["ALTER TABLE {t} ADD PRIMARY KEY (id, created_at)",
              "CREATE UNIQUE INDEX {t}_current ON {t} (id) WHERE expired_at IS NULL"],
        _EXPIRE),
}
BASELINE = next(iter(FLOORS))


def floor(engine: Engine, label: str) -> float:
    fillfactor, ddl, statement = FLOORS[label]
    table = "floor_items"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(f"CREATE TABLE {table} ({_COLUMNS}) WITH (fillfactor = "
                             f"{fillfactor}, autovacuum_enabled = false)")
        conn.exec_driver_sql(_FILL.format(t=table))
        for sql in ddl:
            conn.exec_driver_sql(sql.format(t=table))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM ANALYZE {table}"))
    with engine.connect() as conn:
        start = time.perf_counter()
        conn.exec_driver_sql(statement.format(t=table))
        conn.commit()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="figures whose label contains a word")
    args = parser.parse_args()

    def wanted(label: str) -> bool:
        return not args.only or any(word in label for word in args.only)

    name = f"temporal_bench_guard_{os.getpid()}"
    url = _scratch.create(args.url, name)
    engine = create_engine(url)
    base, item = shared.models("temporal")
    ratios: dict[tuple[str, str], list[float]] = {}
    floors: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            if any(wanted(w) for w in ("bulk update", "bulk delete", "ORM")):
                baseline = figures(engine, base, item, "none", wanted)
                for mode in MODES:
                    for label, seconds in figures(engine, base, item, mode, wanted).items():
                        ratios.setdefault((mode, label), []).append(seconds / baseline[label])
            if wanted("floor"):
                for label in FLOORS:
                    if label != BASELINE:
                        floors.setdefault(label, []).append(
                            floor(engine, label) / floor(engine, BASELINE))
    finally:
        engine.dispose()
        _scratch.drop(args.url, name)
    for (mode, label), values in ratios.items():
        if wanted(label):
            print(f"{label}, guard {mode} / no guard: {statistics.median(values):.2f}x "
                  f"[{min(values):.2f}-{max(values):.2f}]")
    for label, values in floors.items():
        print(f"floor: {label} / {BASELINE}: {statistics.median(values):.2f}x "
              f"[{min(values):.2f}-{max(values):.2f}]")


if __name__ == "__main__":
    main()

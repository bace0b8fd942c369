"""Versioned writes and reads against a plain table, on PostgreSQL (or SQLite).

    python bench/bench_versioning.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
    python bench/bench_versioning.py --sqlite [--only ORM]

Prints each figure as a ratio against its baseline measured in the same run:

* ORM load + change one column + commit of 5,000 rows: temporal / plain
  (target <= 1.5 on SQLite, <= 1.4 on PostgreSQL), and SQLAlchemy-Continuum / plain
  for comparison;
* the same workload on a plain model in a process that also defines a temporal
  model (so temporal's session listeners are installed) / in a process without
  (target <= 1.03; ``bench/bench_import.py --hooked`` measures the same on tiny
  statements, with hundreds of interleaved rounds);
* bulk ``update()`` of 50,000 rows: temporal / plain (target <= 3);
* bulk ``delete()`` of 50,000 rows: temporal / plain (target <= 4), and the floor
  under it: a bare SQL UPDATE of ``expired_at`` (no library, no guard) / a bare
  DELETE (PostgreSQL writes a new tuple and index entries for the UPDATE, marks
  the row for the DELETE);
* 300 range scans on an indexed non-key column with 100x history:
  temporal / plain (target <= 1.3), the same scans in SQL through the driver
  (no ORM: the database's share), and as-of / current;
* 3,000 point reads by key with 10x as much history as current data:
  temporal / plain (target <= 1.15), and as-of / current (target <= 2);

(What importing ``temporal`` costs plain models is ``bench/bench_import.py``: a
3% target needs hundreds of interleaved in-process rounds, not a few processes.)

Each variant runs in its own process, so a plain baseline never pays for the
event hooks that ``temporal`` or Continuum install on every Session. Every run
uses a scratch database created on the server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import _scratch
from sqlalchemy import Engine, String, create_engine, delete, event, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ROWS_ORM = 5_000
ROWS_BULK = 50_000
ROWS_READ = 3_000
ROWS_RANGE = 3_000
RANGE_HISTORY = 100
HISTORY_FACTOR = 10
REPEAT = 5


def models(variant: str, case: str = "") -> Any:
    """The benchmark model for one variant (imports only what the variant needs).

    ``plain+import`` is the plain model in a process that imported ``temporal``:
    what the library costs models that do not use it.
    """
    if variant == "plain+import":
        import temporal  # noqa: F401  (its event hooks are all the variant measures)
    if variant == "plain+hooked":
        from temporal import Temporal as _Temporal

        class Elsewhere(DeclarativeBase):
            pass

        # A temporal model in the process (never used): its listeners are installed.
        type("Other", (_Temporal, Elsewhere), {
            "__tablename__": "other", "__annotations__": {"id": Mapped[int]},
            "id": mapped_column(primary_key=True)})
    if variant == "continuum":
        from sqlalchemy_continuum import make_versioned

        make_versioned(user_cls=None)

    class Base(DeclarativeBase):
        pass

    mixins: tuple[type, ...] = ()
    extra: dict[str, Any] = {}
    if variant == "temporal":
        from temporal import Temporal

        mixins = (Temporal,)
    if variant == "continuum":
        extra["__versioned__"] = {}

    namespace = {
        "__tablename__": "items",
        "__annotations__": {"id": Mapped[int], "name": Mapped[str], "value": Mapped[int]},
        "id": mapped_column(primary_key=True, autoincrement=False),
        "name": mapped_column(String(50)),
        "value": mapped_column(index="range_scan" in case),
        **extra,
    }
    item = type("Item", (*mixins, Base), namespace)
    if variant == "continuum":
        from sqlalchemy.orm import configure_mappers

        configure_mappers()
    return Base, item


def fresh(engine: Engine, base: Any) -> None:
    if engine.dialect.name == "sqlite":
        base.metadata.drop_all(engine)
        with engine.begin() as conn:
            for name in ("temporal_tables", "temporal_alembic_version", "temporal_clock"):
                conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    else:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    base.metadata.create_all(engine)


def fast_fill(engine: Engine, item: Any, rows: int, history: int = 0,
              interleaved: bool = False) -> None:
    """``rows`` current rows (value = id) and ``history`` older versions of each, written
    directly (the same rows for every variant; a plain table gets the current ones).

    The versions go into the heap in rounds, version ``h`` of every key together, as
    ``history`` bulk updates of the table would write them, so the current rows end
    up side by side. ``interleaved`` writes each key's versions together instead: the
    worst case, where every current row sits on a page of its own history.
    """
    temporal = "created_at" in item.__table__.c
    start = _epoch()
    batch: list[dict[str, Any]] = []
    rng = random.Random(3)

    def version(i: int, h: int) -> dict[str, Any]:
        if h == history:
            return {"id": i, "name": f"item {i}", "value": i,
                    "created_at": start + _tick(history), "expired_at": None}
        return {"id": i, "name": f"item {i}", "value": rng.randrange(rows),
                "created_at": start + _tick(h), "expired_at": start + _tick(h + 1)}

    if not temporal:
        order = [(i, history) for i in range(rows)]
    elif interleaved:
        order = [(i, h) for i in range(rows) for h in range(history + 1)]
    else:
        order = [(i, h) for h in range(history + 1) for i in range(rows)]
    with engine.begin() as conn, _forging(conn):  # stamped by hand, history included
        for i, h in order:
            batch.append(version(i, h) if temporal else
                         {"id": i, "name": f"item {i}", "value": i})
            if len(batch) >= 20_000:
                conn.execute(item.__table__.insert(), batch)
                batch = []
        if batch:
            conn.execute(item.__table__.insert(), batch)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


def _tick(n: int) -> Any:
    from datetime import timedelta

    return timedelta(seconds=n)


def fill(engine: Engine, item: Any, rows: int) -> None:
    with Session(engine) as s, s.begin():
        s.add_all([item(id=i, name=f"item {i}", value=0) for i in range(rows)])


# --cpu: time CPU (user + system) instead of the wall clock: this process's, and on
# PostgreSQL also that of the server processes serving its connections (read from
# /proc, so the server must run on this machine). That is all the work, library and
# database alike, without the waits a machine shared with other jobs adds (run
# queue, disk).
CLOCK = time.perf_counter
_BACKENDS: set[int] = set()


def _cpu_clock() -> float:
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _BACKENDS:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the connection closed: its time was counted while it lived
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def timed(fn: Any) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def case_orm_update(engine: Engine, base: Any, item: Any) -> float:
    fresh(engine, base)
    fill(engine, item, ROWS_ORM)

    def run() -> None:
        with Session(engine) as s:
            for obj in s.scalars(select(item)):
                obj.value += 1
            s.commit()

    run()  # warm caches
    return statistics.median(timed(run) for _ in range(REPEAT))


def case_bulk_update(engine: Engine, base: Any, item: Any) -> float:
    fresh(engine, base)
    with engine.begin() as conn, _forging(conn):  # fast fill: the same rows for every variant
        conn.execute(item.__table__.insert(), [
            {"id": i, "name": f"item {i}", "value": 0,
             **({"created_at": _epoch()} if "created_at" in item.__table__.c else {})}
            for i in range(ROWS_BULK)])
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))

    def run() -> None:
        with Session(engine) as s, s.begin():
            s.execute(update(item).where(item.id >= 0).values(value=item.value + 1))

    run()
    return statistics.median(timed(run) for _ in range(3))


def case_bulk_delete(engine: Engine, base: Any, item: Any) -> float:
    times = []
    for _ in range(3):
        fresh(engine, base)
        fast_fill(engine, item, ROWS_BULK)

        def run() -> None:
            with Session(engine) as s, s.begin():
                s.execute(delete(item).where(item.id >= 0))

        times.append(timed(run))
    return statistics.median(times)


def case_bare_expire(engine: Engine, base: Any, item: Any) -> float:
    """The floor under a versioned delete on PostgreSQL: one bare ``UPDATE ... SET
    expired_at`` of every row (no library, guard triggers off for the session) on the
    temporal table, against one bare ``DELETE`` on the plain table."""
    times = []
    temporal = "created_at" in item.__table__.c
    for _ in range(3):
        fresh(engine, base)
        fast_fill(engine, item, ROWS_BULK)
        with engine.begin() as conn:
            start = time.perf_counter()
            if temporal:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                conn.execute(text("UPDATE items SET expired_at = now() "
                                  "WHERE id >= 0 AND expired_at IS NULL"))
            else:
                conn.execute(text("DELETE FROM items WHERE id >= 0"))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def case_range_scan(engine: Engine, base: Any, item: Any, as_of_reads: bool = False,
                    interleaved: bool = False) -> float:
    """Range scans on the indexed ``value`` column (30 rows each), with 100x history."""
    fresh(engine, base)
    fast_fill(engine, item, ROWS_RANGE, history=RANGE_HISTORY, interleaved=interleaved)
    rng = random.Random(11)
    lows = [rng.randrange(ROWS_RANGE - 30) for _ in range(300)]
    options: list[Any] = []
    if as_of_reads:
        from temporal import as_of

        options = [as_of(_epoch() + _tick(RANGE_HISTORY) + _tick(1))]

    def run() -> None:
        with Session(engine) as s:
            for low in lows:
                found = s.scalars(select(item).where(item.value.between(low, low + 29))
                                  .options(*options)).all()
                assert len(found) == 30, len(found)

    run()
    return statistics.median(timed(run) for _ in range(REPEAT))


def case_range_scan_sql(engine: Engine, base: Any, item: Any) -> float:
    """The same 300 range scans as bare SQL through the driver (no ORM, no library): the
    database's share. The temporal table is read with the current-rows predicate."""
    fresh(engine, base)
    fast_fill(engine, item, ROWS_RANGE, history=RANGE_HISTORY)
    rng = random.Random(11)
    lows = [rng.randrange(ROWS_RANGE - 30) for _ in range(300)]
    temporal = "created_at" in item.__table__.c
    sql = ("SELECT id, name, value, created_at, expired_at FROM items WHERE value BETWEEN "
           "%s AND %s AND expired_at IS NULL" if temporal else
           "SELECT id, name, value FROM items WHERE value BETWEEN %s AND %s")
    if engine.dialect.name == "sqlite":
        sql = sql.replace("%s", "?")
    raw = engine.raw_connection()

    def run() -> None:
        cursor = raw.cursor()
        for low in lows:
            cursor.execute(sql, (low, low + 29))
            assert len(cursor.fetchall()) == 30
        cursor.close()

    try:
        run()
        return statistics.median(timed(run) for _ in range(REPEAT))
    finally:
        raw.close()


def case_point_reads(engine: Engine, base: Any, item: Any, as_of_reads: bool = False) -> float:
    fresh(engine, base)
    fill(engine, item, ROWS_READ)
    middle = None
    if hasattr(item, "created_at"):
        for round_no in range(HISTORY_FACTOR):
            with Session(engine) as s, s.begin():
                s.execute(update(item).where(item.id >= 0).values(value=item.value + 1))
                if round_no == HISTORY_FACTOR // 2:
                    from temporal import transaction_time

                    middle = transaction_time(s)
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE") if False else text("ANALYZE"))
    keys = list(range(ROWS_READ))
    random.Random(7).shuffle(keys)
    options: list[Any] = []
    if as_of_reads:
        from temporal import as_of

        options = [as_of(middle)]

    def run() -> None:
        with Session(engine) as s:
            for k in keys:
                assert s.get(item, k, options=options) is not None

    run()
    return statistics.median(timed(run) for _ in range(REPEAT))


def _forging(conn: Any) -> Any:
    """Stamped by hand: past temporal's versioning triggers (a no-op for other variants)."""
    from contextlib import nullcontext

    if "temporal" in sys.modules:
        from temporal import triggers

        return triggers.maintenance(conn)
    return nullcontext()


def _epoch() -> Any:
    from datetime import datetime, timezone

    return datetime(2026, 1, 1, tzinfo=timezone.utc)


CASES = {
    "orm_update": case_orm_update,
    "bulk_delete": case_bulk_delete,
    "bare_expire": case_bare_expire,
    "range_scan": case_range_scan,
    "as_of_range_scan": lambda e, b, i: case_range_scan(e, b, i, as_of_reads=True),
    "interleaved_range_scan": lambda e, b, i: case_range_scan(e, b, i, interleaved=True),
    "range_scan_sql": case_range_scan_sql,
    "bulk_update": case_bulk_update,
    "point_reads": case_point_reads,
    "as_of_point_reads": lambda e, b, i: case_point_reads(e, b, i, as_of_reads=True),
}


def child(url: str, variant: str, case: str) -> None:
    base, item = models(variant, case)
    engine = create_engine(url)
    if CLOCK is _cpu_clock and engine.dialect.name == "postgresql":
        @event.listens_for(engine, "connect")
        def _backend(dbapi_connection: Any, record: Any) -> None:
            _BACKENDS.add(dbapi_connection.info.backend_pid)
    seconds = CASES[case](engine, base, item)
    engine.dispose()
    print(json.dumps({"seconds": seconds}))


def measure(url: str, variant: str, case: str, cpu: bool = False) -> float:
    done = subprocess.run([sys.executable, __file__, "--child", variant, case, "--url", url,
                           *(["--cpu"] if cpu else [])],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant}/{case} failed:\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "CASE"))
    parser.add_argument("--skip-continuum", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (median)")
    parser.add_argument("--sqlite", action="store_true", help="a scratch SQLite file instead")
    parser.add_argument("--only", nargs="*", help="figures whose label contains a word")
    parser.add_argument("--cpu", action="store_true",
                        help="time CPU (this process's and its PostgreSQL server processes') "
                        "instead of the wall clock")
    args = parser.parse_args()
    if args.cpu:
        global CLOCK
        CLOCK = _cpu_clock
    if args.child:
        child(args.url, *args.child)
        return
    scratch = f"temporal_bench_{os.getpid()}"
    if args.sqlite:
        folder = tempfile.mkdtemp()
        url = f"sqlite:///{folder}/bench.db"
    else:
        url = _scratch.create(args.url, scratch)
    pairs = [
        (f"ORM load+change+commit, {ROWS_ORM:,} rows: temporal / plain",
         ("temporal", "orm_update"), ("plain", "orm_update"), 1.5 if args.sqlite else 1.4),
        (f"ORM load+change+commit, {ROWS_ORM:,} rows: plain model beside temporal models / "
         "alone", ("plain+hooked", "orm_update"), ("plain", "orm_update"), 1.03),
        (f"bulk update(), {ROWS_BULK:,} rows: temporal / plain",
         ("temporal", "bulk_update"), ("plain", "bulk_update"), 3.0),
        (f"bulk delete(), {ROWS_BULK:,} rows: temporal / plain",
         ("temporal", "bulk_delete"), ("plain", "bulk_delete"), 4.0),
        (f"bare SQL UPDATE setting expired_at of {ROWS_BULK:,} rows / bare DELETE "
         "(the floor, no target)",
         ("temporal", "bare_expire"), ("plain", "bare_expire"), None),
        (f"300 range scans on an indexed column, {RANGE_HISTORY}x history: temporal / plain",
         ("temporal", "range_scan"), ("plain", "range_scan"), 1.3),
        (f"the same, each key's {RANGE_HISTORY} versions side by side in the heap (worst case)",
         ("temporal", "interleaved_range_scan"), ("plain", "range_scan"), None),
        ("the same 300 range scans in SQL through the driver, no ORM (the database's share)",
         ("temporal", "range_scan_sql"), ("plain", "range_scan_sql"), None),
        ("300 range scans: as-of / current",
         ("temporal", "as_of_range_scan"), ("temporal", "range_scan"), None),
        (f"{ROWS_READ:,} point reads, {HISTORY_FACTOR}x history: temporal / plain",
         ("temporal", "point_reads"), ("plain", "point_reads"), 1.15),
        (f"{ROWS_READ:,} point reads: as-of / current",
         ("temporal", "as_of_point_reads"), ("temporal", "point_reads"), 2.0),
    ]
    if not args.skip_continuum and not args.sqlite:
        pairs.insert(1, (f"ORM load+change+commit, {ROWS_ORM:,} rows: Continuum / plain",
                         ("continuum", "orm_update"), ("plain", "orm_update"), None))
    if args.sqlite:
        pairs = [p for p in pairs if "bare SQL" not in p[0]]
    if args.only:
        pairs = [p for p in pairs if any(word in p[0] for word in args.only)]
    # The machine is noisy: variant and baseline run back to back, several
    # rounds, and the median of the per-round ratios is reported.
    ratios: dict[str, list[float]] = {label: [] for label, *_ in pairs}
    for _ in range(args.rounds):
        for label, variant, baseline, _target in pairs:
            if "Continuum" in label and ratios[label]:
                continue  # one round is plenty for a 50x figure
            ratios[label].append(measure(url, *variant, cpu=args.cpu)
                                 / measure(url, *baseline, cpu=args.cpu))
    for label, _variant, _baseline, target in pairs:
        ratio = statistics.median(ratios[label])
        spread = f" [{min(ratios[label]):.2f}-{max(ratios[label]):.2f}]"
        verdict = "" if target is None else ("  ok" if ratio <= target else "  OVER")
        goal = "" if target is None else f" (target <= {target})"
        clock = " (CPU time)" if args.cpu else ""
        print(f"{label}{clock}: {ratio:.2f}x{spread}{goal}{verdict}")
    if not args.sqlite:
        _scratch.drop(args.url, scratch)


if __name__ == "__main__":
    main()

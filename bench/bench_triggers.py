"""Raw SQL writers on a versioned table against the same table plain, with the anchors beside it.

    python bench/bench_triggers.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                   [--mariadb mysql://root@127.0.0.1:3306] [--rounds 5]

Raw writers go through psycopg (or pymysql) directly, as psql or another
service would; the versioning is the database's. Each figure is a ratio of
medians over interleaved rounds, measured in this run:

* 5,000 single-row ``UPDATE ... WHERE id = ?`` in one transaction, on a table of
  25,000 rows: versioned / plain (goal <= 2);
* one set-based ``UPDATE`` of all 25,000 rows: versioned / plain (goal <= 3);
* the same two without the overlap guard (``guard.py``'s statement triggers,
  which every versioned write pays, the library's too): what the
  triggers themselves cost;
* the floor: the same two versioned by hand on the temporal table with no
  triggers and no guard at all, one statement each (``WITH copy AS (INSERT
  ... the old versions, expired) UPDATE ... SET created_at = ...``): the extra
  INSERT and the non-HOT update (``created_at`` is in the primary key) that
  any versioning in the same table pays, whoever writes it;
* the same PostgreSQL figures in server CPU time (the server process's
  ``/proc/<pid>/schedstat``, when the server runs on this machine), steadier
  than wall time on a loaded machine;
* the same two on the anchors: the PostgreSQL ``periods`` extension (system
  versioning, a history table; when the extension is installed on the server)
  and MariaDB ``WITH SYSTEM VERSIONING`` (when ``--mariadb`` reaches a server;
  needs ``pip install pymysql``);
* the library's own writes with the triggers installed / without them (ORM
  load+change+commit of 5,000 rows, bulk ``update()`` of 25,000): the triggers
  must let them through at no cost (about 1.0).

Scratch databases are created for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import _scratch
from sqlalchemy import String, create_engine, make_url, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import Temporal, guard, triggers

ROWS = 25_000
SINGLE = 5_000


class Base(DeclarativeBase):
    pass


class Item(Temporal, Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(50))
    value: Mapped[int]


class PlainBase(DeclarativeBase):
    pass


class PlainItem(PlainBase):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(50))
    value: Mapped[int]


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- PostgreSQL: versioned (temporal triggers), plain, periods -------------------------


def pg_connect(url: str) -> Any:
    import psycopg

    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username,
                           password=u.password or None, dbname=u.database)


def pg_setup(url: str, variant: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP EXTENSION IF EXISTS periods CASCADE")
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    if variant in ("versioned", "untriggered", "unguarded", "bare"):
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            if variant in ("untriggered", "bare"):
                triggers.remove(conn, "items")
            if variant in ("unguarded", "bare"):  # without the overlap guard's cost
                guard.remove(conn, "items")
    else:
        PlainBase.metadata.create_all(engine)
    engine.dispose()
    raw = pg_connect(url)
    with raw.cursor() as cur:
        if variant in ("untriggered", "bare"):  # nobody stamps the rows: stamped here
            with cur.copy("COPY items (id, name, value, created_at) FROM STDIN") as copy:
                for i in range(ROWS):
                    copy.write_row((i, f"item {i}", 0, "2026-01-01T00:00:00Z"))
        else:
            with cur.copy("COPY items (id, name, value) FROM STDIN") as copy:
                for i in range(ROWS):
                    copy.write_row((i, f"item {i}", 0))
        if variant == "periods":
            cur.execute("CREATE EXTENSION IF NOT EXISTS periods CASCADE")
            cur.execute("SELECT periods.add_system_time_period('items')")
            cur.execute("SELECT periods.add_system_versioning('items')")
        cur.execute("ANALYZE items")
    raw.commit()
    raw.close()


# The floor: what the triggers do, by hand in one statement, on the bare temporal table.
BY_HAND = ("WITH copy AS (INSERT INTO items (id, name, value, created_at, expired_at) "
           "SELECT id, name, value, created_at, '2026-06-01Z' FROM items "
           "WHERE expired_at IS NULL{where}) "
           "UPDATE items SET value = value + 1, created_at = '2026-06-01Z' "
           "WHERE expired_at IS NULL{where}")


def server_cpu(raw: Any) -> float | None:
    """CPU seconds the connection's server process has used, when the server runs on
    this machine (steadier than wall time on a loaded machine; None elsewhere)."""
    try:
        with open(f"/proc/{raw.info.backend_pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        return None


def timed_pg(raw: Any, fn: Callable[[], None]) -> tuple[float, float | None]:
    """Wall seconds of ``fn`` and the server CPU seconds it took."""
    before = server_cpu(raw)
    seconds = timed(fn)
    after = server_cpu(raw)
    return seconds, None if before is None or after is None else after - before


def pg_single(url: str, by_hand: bool = False) -> tuple[float, float | None]:
    raw = pg_connect(url)
    keys = list(range(0, ROWS, ROWS // SINGLE))[:SINGLE]
    sql = "UPDATE items SET value = value + 1 WHERE id = %(k)s"
    if by_hand:
        sql = BY_HAND.format(where=" AND id = %(k)s")

    def run() -> None:
        with raw.cursor() as cur:
            for k in keys:
                cur.execute(sql, {"k": k})
        raw.commit()

    measured = timed_pg(raw, run)
    raw.close()
    return measured


def pg_set(url: str, by_hand: bool = False) -> tuple[float, float | None]:
    raw = pg_connect(url)
    sql = BY_HAND.format(where="") if by_hand else "UPDATE items SET value = value + 1"

    def run() -> None:
        raw.execute(sql)
        raw.commit()

    measured = timed_pg(raw, run)
    raw.close()
    return measured


def library_orm(url: str) -> float:
    engine = create_engine(url)

    def run() -> None:
        with Session(engine) as s:
            for obj in s.scalars(select(Item).where(Item.id < SINGLE)):
                obj.value += 1
            s.commit()

    seconds = timed(run)
    engine.dispose()
    return seconds


def library_bulk(url: str) -> float:
    engine = create_engine(url)

    def run() -> None:
        with Session(engine) as s, s.begin():
            s.execute(update(Item).values(value=Item.value + 1))

    seconds = timed(run)
    engine.dispose()
    return seconds


def periods_available(url: str) -> bool:
    raw = pg_connect(url)
    found = raw.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'periods'").fetchone()
    raw.close()
    return found is not None


# -- MariaDB ------------------------------------------------------------------------------


class Maria:
    def __init__(self, url: str) -> None:
        import pymysql

        u = make_url(url)
        self.name = f"temporal_bench_{os.getpid()}"
        self.args = {"host": u.host or "127.0.0.1", "port": u.port or 3306,
                     "user": u.username or "root", "password": u.password or ""}
        admin = pymysql.connect(**self.args, autocommit=True)
        admin.cursor().execute(f"CREATE DATABASE `{self.name}`")
        admin.close()
        self.pymysql = pymysql

    def connect(self) -> Any:
        return self.pymysql.connect(**self.args, database=self.name)

    def setup(self, versioned: bool) -> None:
        conn = self.connect()
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS items")
        cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50), value INT)"
                    + (" WITH SYSTEM VERSIONING" if versioned else ""))
        for start in range(0, ROWS, 5000):
            cur.executemany("INSERT INTO items (id, name, value) VALUES (%s, %s, 0)",
                            [(i, f"item {i}") for i in range(start, min(ROWS, start + 5000))])
        conn.commit()
        cur.execute("ANALYZE TABLE items")
        cur.fetchall()
        conn.close()

    def single(self) -> float:
        conn = self.connect()
        keys = list(range(0, ROWS, ROWS // SINGLE))[:SINGLE]

        def run() -> None:
            cur = conn.cursor()
            for k in keys:
                cur.execute("UPDATE items SET value = value + 1 WHERE id = %s", (k,))
            conn.commit()

        seconds = timed(run)
        conn.close()
        return seconds

    def set_based(self) -> float:
        conn = self.connect()

        def run() -> None:
            conn.cursor().execute("UPDATE items SET value = value + 1")
            conn.commit()

        seconds = timed(run)
        conn.close()
        return seconds

    def drop(self) -> None:
        admin = self.pymysql.connect(**self.args, autocommit=True)
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        admin.close()


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--mariadb", default="mysql://root@127.0.0.1:3306",
                        help="a MariaDB server for the anchor ('' to skip)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (median)")
    args = parser.parse_args()
    name = f"temporal_bench_triggers_{os.getpid()}"
    url = _scratch.create(args.url, name)
    maria = None
    if args.mariadb:
        try:
            maria = Maria(args.mariadb)
        except Exception as error:  # no driver or no server: the anchor is left out
            print(f"MariaDB anchor skipped: {type(error).__name__}: {error}")
    times: dict[str, list[float]] = {}

    def record(label: str, seconds: float) -> None:
        times.setdefault(label, []).append(seconds)

    def record_pg(label: str, measured: tuple[float, float | None]) -> None:
        record(label, measured[0])
        if measured[1] is not None:
            record(label + " cpu", measured[1])

    with_periods = periods_available(url)
    try:
        for _ in range(args.rounds):  # interleaved, each on a fresh table
            for variant in ("plain", "versioned", "unguarded", "bare",
                            *(["periods"] if with_periods else [])):
                by_hand = variant == "bare"
                pg_setup(url, variant)
                record_pg(f"pg {variant} single", pg_single(url, by_hand))
                pg_setup(url, variant)
                record_pg(f"pg {variant} set", pg_set(url, by_hand))
            for variant in ("versioned", "untriggered"):
                pg_setup(url, variant)
                record(f"library {variant} orm", library_orm(url))
                pg_setup(url, variant)
                record(f"library {variant} bulk", library_bulk(url))
            if maria is not None:
                for versioned in (False, True):
                    kind = "versioned" if versioned else "plain"
                    maria.setup(versioned)
                    record(f"maria {kind} single", maria.single())
                    maria.setup(versioned)
                    record(f"maria {kind} set", maria.set_based())
    finally:
        _scratch.drop(args.url, name)
        if maria is not None:
            maria.drop()

    med = {label: statistics.median(values) for label, values in times.items()}

    def ratio(title: str, top: str, bottom: str, goal: float | None = None) -> None:
        if top not in med or bottom not in med:
            return
        figure = med[top] / med[bottom]
        target = f"   (goal <= {goal:g})" if goal else ""
        print(f"{title:<62} {figure:6.2f}x  [{med[top]:.3f}s / {med[bottom]:.3f}s]{target}")

    print(f"medians of {args.rounds} interleaved rounds")
    ratio(f"raw {SINGLE:,} single-row UPDATEs, temporal triggers / plain", "pg versioned single",
          "pg plain single", 2)
    ratio(f"raw set-based UPDATE of {ROWS:,} rows, temporal triggers / plain", "pg versioned set",
          "pg plain set", 3)
    ratio("    without the overlap guard (guard.py), single-row",
          "pg unguarded single", "pg plain single")
    ratio("    without the overlap guard (guard.py), set-based",
          "pg unguarded set", "pg plain set")
    ratio("  floor: versioned by hand, no triggers, no guard, single-row",
          "pg bare single", "pg plain single")
    ratio("  floor: versioned by hand, no triggers, no guard, set-based",
          "pg bare set", "pg plain set")
    for kind in ("single", "set"):
        shown = "single-row" if kind == "single" else "set-based"
        for variant, what in (("versioned", "temporal triggers"), ("unguarded", "no guard"),
                              ("bare", "floor")):
            ratio(f"  server CPU, {shown}: {what} / plain", f"pg {variant} {kind} cpu",
                  f"pg plain {kind} cpu")
    if with_periods:
        ratio("  anchor: periods extension, single-row / plain", "pg periods single",
              "pg plain single")
        ratio("  anchor: periods extension, set-based / plain", "pg periods set", "pg plain set")
    else:
        print("  anchor: periods extension not installed on this server "
              "(apt-get install postgresql-15-periods)")
    ratio("  anchor: MariaDB system versioning, single-row / plain", "maria versioned single",
          "maria plain single")
    ratio("  anchor: MariaDB system versioning, set-based / plain", "maria versioned set",
          "maria plain set")
    ratio(f"library ORM load+change+commit, {SINGLE:,} rows: triggers / none",
          "library versioned orm", "library untriggered orm")
    ratio(f"library bulk update(), {ROWS:,} rows: triggers / none", "library versioned bulk",
          "library untriggered bulk")


if __name__ == "__main__":
    main()

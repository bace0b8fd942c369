"""A bounded concurrent mix on PostgreSQL, and the invariants history must keep under it.

Writers insert, update and delete through the ORM and through bulk statements,
retrying on ConflictError; an archiver moves expired versions away; an exporter
exports a past moment twice and compares. Afterwards, :func:`check` verifies:

* no key has overlapping, empty or negative periods (``guard.overlaps``), nor
  two current rows;
* every version starts, and every expiry happens, at the stamp of a transaction
  that committed (one transaction = one timestamp), and each key has at most one
  version per transaction;
* versions equal commits: the stamps found in history are exactly those of the
  committed transactions that changed something;
* each export of the same past moment gave the same content digest.

Used by ``tests/test_soak.py`` (a few seconds) and ``bench/soak.py`` (longer).
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, Integer, String, delete, insert, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import ConflictError, archive, export, guard, transaction_time
from temporal.export import ExportError
from temporal.model import Temporal

KEYS = 24


class Base(DeclarativeBase):
    pass


class Item(Temporal, Base):
    __tablename__ = "soak_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(default=0)
    writer: Mapped[str] = mapped_column(String(20), default="")


@dataclass
class Outcome:
    committed: set[datetime] = field(default_factory=set)  # stamps of commits that wrote
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    digests: dict[datetime, set[str]] = field(default_factory=dict)


def _one_transaction(s: Session, rng: random.Random, name: str) -> int:
    """One random change; returns how many rows it changed."""
    cid = rng.randrange(1, KEYS + 1)
    op = rng.random()
    if op < 0.3:
        obj = s.get(Item, cid)
        if obj is None:
            s.add(Item(id=cid, value=1, writer=name))
        else:
            obj.value += 1
            obj.writer = name
        s.flush()
        return 1
    if op < 0.45:
        obj = s.get(Item, cid)
        if obj is None:
            return 0
        s.delete(obj)
        s.flush()
        return 1
    if op < 0.7:
        low = rng.randrange(1, KEYS + 1)
        return int(s.execute(update(Item).where(Item.id.between(low, low + 3))
                             .values(value=Item.value + 1, writer=name)).rowcount)
    if op < 0.8:
        return int(s.execute(delete(Item).where(Item.id == cid)).rowcount)
    if s.get(Item, cid) is not None:
        return 0
    s.execute(insert(Item), [{"id": cid, "value": 1, "writer": name}])
    return 1


def _writer(engine: Engine, seed: int, until: float, out: Outcome, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    name = f"w{seed}"
    while time.monotonic() < until:
        for _attempt in range(50):
            s = Session(engine)
            try:
                with s.begin():
                    changed = _one_transaction(s, rng, name)
                    stamp = transaction_time(s, Item)
                with lock:
                    out.counts["commits"] += 1
                    if changed:
                        out.committed.add(stamp)
                break
            except ConflictError:
                with lock:
                    out.counts["conflicts"] += 1
            except sa.exc.IntegrityError as error:  # a concurrent insert of the same new key
                with lock:
                    out.counts["duplicate inserts"] += 1
                if "_current" not in str(error):
                    out.failures.append(f"{name}: {error}")
                break
            except BaseException as error:  # reported by check()
                out.failures.append(f"{name}: {type(error).__name__}: {error}")
                return
            finally:
                s.close()


def _archiver(engine: Engine, until: float, out: Outcome) -> None:
    while time.monotonic() < until:
        try:
            archive(engine, ttl=timedelta(seconds=1), batch_size=50)
            out.counts["archive runs"] += 1
        except BaseException as error:
            out.failures.append(f"archiver: {type(error).__name__}: {error}")
            return
        time.sleep(0.2)


def _exporter(engine: Engine, until: float, out: Outcome) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        n = 0
        while time.monotonic() < until:
            with engine.connect() as conn:
                moment = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
            moment -= timedelta(milliseconds=300)
            for _ in range(2):  # the same past moment twice, with writes in between
                n += 1
                try:
                    manifest = export(engine, Path(scratch) / f"e{n}", as_of=moment,
                                      tables=[Item.__tablename__], wait=20)
                except ExportError as error:
                    out.failures.append(f"exporter: {error}")
                    return
                out.digests.setdefault(moment, set()).add(str(manifest.content_digest))
                out.counts["exports"] += 1
                time.sleep(0.1)


def run(engine: Engine, seconds: float, writers: int = 4) -> Outcome:
    """Create the table, run the mix for ``seconds``; return what happened."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    out = Outcome()
    lock = threading.Lock()
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=_writer, args=(engine, seed, until, out, lock))
               for seed in range(writers)]
    threads += [threading.Thread(target=_archiver, args=(engine, until, out)),
                threading.Thread(target=_exporter, args=(engine, until, out))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    return out


def check(engine: Engine, out: Outcome) -> list[str]:
    """Every broken invariant, as a sentence (empty: history is exact)."""
    problems = list(out.failures)
    with engine.connect() as conn:
        problems += [o.describe() for o in guard.overlaps(conn, Item.__tablename__, ["id"],
                                                           limit=20)]
        rows: list[Any] = conn.execute(select(Item.__table__)).all()  # archive included
    current = Counter(r.id for r in rows if r.expired_at is None)
    problems += [f"key {k} has {n} current rows" for k, n in current.items() if n > 1]
    problems += [f"key {r.id}: empty period at {r.created_at}" for r in rows
                 if r.expired_at is not None and r.expired_at <= r.created_at]
    per_tx = Counter((r.id, r.created_at) for r in rows)
    problems += [f"key {k}: {n} versions from one transaction" for k, n in per_tx.items()
                 if n > 1]
    seen = {r.created_at for r in rows} | {r.expired_at for r in rows if r.expired_at}
    problems += [f"a version stamped {t} by a transaction that did not commit"
                 for t in sorted(seen - out.committed)]
    problems += [f"a committed transaction stamped {t} left no version" for t in
                 sorted(out.committed - seen)]
    problems += [f"exports as of {t} differ" for t, d in out.digests.items() if len(d) > 1]
    return problems

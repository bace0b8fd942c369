"""The main job, end to end: history builds up, two past training sets are exported and verified.

    python examples/demo.py [DATABASE_URL]     (default: sqlite:///temporal-demo.db, recreated)

Customer features drift week by week (tiers change, spend grows, some
customers leave, new ones sign up). On SQLite the library's clock is pinned
to each simulated week, so eight weeks of history take a second. Then the
demo exports the table as of week 3 and as of week 6, as an ML pipeline would
for two training runs, verifies both exports against their manifests and the
database, prints what changed between them, and shows that exporting week 3
again after all of that gives the very same bytes.
"""

from __future__ import annotations

import random
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import String, create_engine, delete, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from temporal import Temporal, export, load, verify
from temporal.clock import pinned

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
WEEKS = 8


class Base(DeclarativeBase):
    pass


class CustomerFeatures(Temporal, Base):
    __tablename__ = "customer_features"

    id: Mapped[int] = mapped_column(primary_key=True)
    segment: Mapped[str] = mapped_column(String(20))
    weekly_spend: Mapped[float]
    visits: Mapped[int]


def week(n: int) -> datetime:
    return START + timedelta(weeks=n)


def build_history(url: str) -> None:
    rng = random.Random(42)
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    next_id = 1
    for n in range(WEEKS):
        with pinned(week(n)), Session(engine) as s, s.begin():
            for _ in range(25 if n == 0 else 4):  # sign-ups
                s.add(CustomerFeatures(id=next_id, segment="new", weekly_spend=0.0, visits=0))
                next_id += 1
            s.flush()
            for c in s.scalars(select(CustomerFeatures)):
                if rng.random() < 0.6:  # feature drift
                    c.visits += rng.randint(1, 5)
                    c.weekly_spend = round(c.weekly_spend * 0.8 + rng.uniform(5, 60), 2)
                    c.segment = "loyal" if c.visits > 12 else "active"
            leaving = rng.sample(range(1, next_id), 2)
            s.execute(delete(CustomerFeatures).where(CustomerFeatures.id.in_(leaving)))
    engine.dispose()


def main(url: str, out: Path) -> None:
    build_history(url)
    print(f"built {WEEKS} weeks of customer features in {url}")
    exports = {}
    for n in (3, 6):
        manifest = export(url, out / f"week{n}", as_of=week(n) + timedelta(days=1),
                          tables=["customer_features"])
        report = verify(out / f"week{n}" / "manifest.json", url)
        assert report.ok, report.problems
        print(f"week {n}: exported {manifest.rows} customers as of {manifest.as_of}, "
              f"content sha256 {manifest.content_digest['all'][:12]}, verified against "
              "files and database")
        rows = load(out / f"week{n}", as_="pyarrow").to_pylist()
        exports[n] = {r["id"]: r for r in rows}

    before, after = exports[3], exports[6]
    new = sorted(after.keys() - before.keys())
    gone = sorted(before.keys() - after.keys())
    moved = [i for i in before.keys() & after.keys()
             if before[i]["segment"] != after[i]["segment"]]

    def mean_spend(rows: dict[int, dict[str, float]]) -> float:
        return sum(r["weekly_spend"] for r in rows.values()) / len(rows)

    print(f"between week 3 and week 6: {len(new)} customers joined, {len(gone)} left, "
          f"{len(moved)} changed segment, mean weekly spend "
          f"{mean_spend(before):.2f} -> {mean_spend(after):.2f}")

    again = export(url, out / "week3-again", as_of=week(3) + timedelta(days=1),
                   tables=["customer_features"])
    first = (out / "week3" / again.files[0].path).read_bytes()
    assert (out / "week3-again" / again.files[0].path).read_bytes() == first
    print("week 3 exported again after all later history: byte-identical")
    assert len(new) > 0 and len(gone) > 0 and len(moved) > 0
    print("demo: ok")


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///temporal-demo.db"
    if target.startswith("sqlite:///") and len(sys.argv) == 1:
        Path(target.removeprefix("sqlite:///")).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="temporal-demo-") as tmp:
        main(target, Path(tmp))

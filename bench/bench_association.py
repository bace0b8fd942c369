"""Many-to-many reads through a temporal association table against a plain one.

    python bench/bench_association.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Builds the same schema twice in one scratch database (plain tables, and temporal
ones whose links have 10x as much history as current links), then prints, as
ratios against the plain baseline measured in the same run:

* selectinload of every article's tags: temporal / plain;
* lazy loads of the tags of 300 articles, one by one: temporal / plain;
* the same selectinload read as of the last write (same rows): as-of / current.

Both variants run in one process (temporal's session hooks are installed for
both), so the ratios measure the link criterion and the larger history, not the
hooks. The scratch database is created on the server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import _scratch
from sqlalchemy import Column, ForeignKey, String, Table, create_engine, insert, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

from temporal import Temporal, as_of, association_table, transaction_time

ARTICLES = 2_000
TAGS_EACH = 5
HISTORY_FACTOR = 10
REPEAT = 5


def schema(temporal: bool) -> tuple[Any, Any, Any]:
    class Base(DeclarativeBase):
        pass

    prefix = "t_" if temporal else "p_"
    mixins: tuple[type, ...] = (Temporal, Base) if temporal else (Base,)
    cols = (Column("article_id", ForeignKey(f"{prefix}articles.id"), primary_key=True),
            Column("tag_id", ForeignKey(f"{prefix}tags.id"), primary_key=True))
    link = (association_table(f"{prefix}links", Base.metadata, *cols) if temporal
            else Table(f"{prefix}links", Base.metadata, *cols))

    class Tag(*mixins):  # type: ignore[misc]
        __tablename__ = f"{prefix}tags"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(20))

    class Article(*mixins):  # type: ignore[misc]
        __tablename__ = f"{prefix}articles"
        id: Mapped[int] = mapped_column(primary_key=True)
        tags: Mapped[list[Tag]] = relationship(secondary=link)

    return Base, Article, Tag


def fill(engine: Any, models: tuple[Any, Any, Any], temporal: bool) -> Any:
    base, article, tag = models
    base.metadata.create_all(engine)
    link = article.tags.property.secondary
    with Session(engine) as s, s.begin():
        s.execute(insert(tag), [{"id": i, "name": f"t{i}"} for i in range(1, 101)])
        s.execute(insert(article), [{"id": i} for i in range(1, ARTICLES + 1)])
        moment = transaction_time(s) if temporal else None
    rows = []
    for a in range(1, ARTICLES + 1):
        for n in range(TAGS_EACH):
            rows.append({"article_id": a, "tag_id": (a + n * 7) % 100 + 1})
    if temporal:  # older links, expired: history HISTORY_FACTOR times the current links
        assert moment is not None
        old = []
        for k in range(HISTORY_FACTOR):
            start = moment - timedelta(days=HISTORY_FACTOR - k + 1)
            old += [{**r, "created_at": start, "expired_at": start + timedelta(days=1)}
                    for r in rows]
        rows = old + [{**r, "created_at": moment, "expired_at": None} for r in rows]
    with engine.begin() as conn:
        for i in range(0, len(rows), 10_000):
            conn.execute(insert(link), rows[i:i + 10_000])
    return moment


def timed(run: Callable[[], None]) -> float:
    run()  # warm up caches
    samples = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    url = _scratch.create(args.url, "temporal_bench_association")
    engine = create_engine(url)
    try:
        plain, temporal = schema(False), schema(True)
        fill(engine, plain, False)
        moment = fill(engine, temporal, True)

        def selectin(models: Any, *opts: Any) -> Callable[[], None]:
            def run() -> None:
                with Session(engine) as s:
                    for a in s.scalars(select(models[1]).options(
                            selectinload(models[1].tags), *opts)):
                        len(a.tags)
            return run

        def lazy(models: Any) -> Callable[[], None]:
            def run() -> None:
                with Session(engine) as s:
                    for a in s.scalars(select(models[1]).where(models[1].id <= 300)):
                        len(a.tags)
            return run

        base_selectin = timed(selectin(plain))
        temporal_selectin = timed(selectin(temporal))
        base_lazy = timed(lazy(plain))
        temporal_lazy = timed(lazy(temporal))
        past_selectin = timed(selectin(temporal, as_of(moment)))
        print(f"selectinload, {ARTICLES} articles x {TAGS_EACH} tags, "
              f"{HISTORY_FACTOR}x link history: temporal / plain = "
              f"{temporal_selectin / base_selectin:.2f}")
        print(f"lazy loads of 300 articles' tags: temporal / plain = "
              f"{temporal_lazy / base_lazy:.2f}")
        print(f"selectinload as of the last write / current = "
              f"{past_selectin / temporal_selectin:.2f}")
    finally:
        engine.dispose()
        _scratch.drop(args.url, "temporal_bench_association")


if __name__ == "__main__":
    main()

"""The suite's concurrent soak (``tests/soak.py``), for as long as you like, on PostgreSQL.

    python bench/soak.py [--minutes 5] [--writers 4] [--url postgresql+psycopg://...]

Writers insert, update and delete through the ORM and bulk statements (retrying
on ConflictError) beside an archiver and an exporter, in a scratch database
created on the server and dropped afterwards; then every invariant of
``tests.soak.check`` is verified. Prints what happened and every broken
invariant; exit status 1 if there is one.
"""

from __future__ import annotations

import argparse
import os
import sys

import _scratch
from sqlalchemy import create_engine

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests import soak  # (the repository root is on the path now)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--writers", type=int, default=4)
    args = parser.parse_args()
    name = f"temporal_soak_{os.getpid()}"
    engine = create_engine(_scratch.create(args.url, name), pool_size=args.writers + 4)
    try:
        out = soak.run(engine, seconds=args.minutes * 60, writers=args.writers)
        problems = soak.check(engine, out)
    finally:
        engine.dispose()
        _scratch.drop(args.url, name)
    print(", ".join(f"{k}: {v}" for k, v in sorted(out.counts.items())))
    for problem in problems:
        print(f"BROKEN: {problem}")
    print("history exact" if not problems else f"{len(problems)} broken invariants")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

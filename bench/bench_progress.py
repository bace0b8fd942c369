"""What the terminal progress bar costs: an export with a progress callback (which counts
the rows first, for the total) against the same export without, in the same run.

    python bench/bench_progress.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                   [--rows 300000] [--rounds 3]

Prints the median time ratio (with progress / without). A scratch database is
created on the server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _scratch
from bench_export import AS_OF, fill

from temporal import export


def timed(url: str, out: Path, progress: bool) -> float:
    start = time.perf_counter()
    export(url, out, as_of=AS_OF, tables=["events"],
           on_progress=(lambda p: None) if progress else None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = _scratch.create(args.url, "temporal_bench_progress")
    try:
        fill(url, args.rows)
        ratios = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(args.rounds):
                plain = timed(url, Path(tmp) / f"plain{n}", progress=False)
                counted = timed(url, Path(tmp) / f"counted{n}", progress=True)
                ratios.append(counted / plain)
                print(f"round {n + 1}: without {plain:.2f}s, with progress {counted:.2f}s, "
                      f"ratio {counted / plain:.2f}")
        print(f"median ratio with progress / without: {statistics.median(ratios):.2f} "
              f"({args.rows:,} rows)")
    finally:
        _scratch.drop(args.url, "temporal_bench_progress")


if __name__ == "__main__":
    main()

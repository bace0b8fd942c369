"""What verify costs now that it recomputes every claim from the files: its time against
hashing the same files with sha256 (what verify did before), in the same run.

    python bench/bench_verify.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                 [--rows 300000] [--rounds 3]

Prints the median ratio per format. A scratch database is created on the
server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _scratch
from bench_export import AS_OF, fill

from temporal import export, verify
from temporal.manifest import file_sha256


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = _scratch.create(args.url, "temporal_bench_verify")
    try:
        fill(url, args.rows)
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in ("csv", "jsonl", "parquet"):
                out = Path(tmp) / fmt
                manifest = export(url, out, as_of=AS_OF, tables=["events"], format=fmt)
                ratios = []
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    for entry in manifest.files:
                        file_sha256(out / entry.path)
                    hashed = time.perf_counter() - start
                    start = time.perf_counter()
                    assert verify(out).ok
                    checked = time.perf_counter() - start
                    ratios.append(checked / hashed)
                print(f"{fmt}: verify / sha256 of the files = {statistics.median(ratios):.1f}x "
                      f"(verify {checked:.2f}s, {args.rows / checked:,.0f} rows/s)")
    finally:
        _scratch.drop(args.url, "temporal_bench_verify")


if __name__ == "__main__":
    main()

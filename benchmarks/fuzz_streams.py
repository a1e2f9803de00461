"""Hostile device streams through StreamParser and DeviceClient: >= 10,000 random and mutated
streams (valid records cut, flipped, glued behind garbage, oversize lines, NUL runs, escape
sequences, random chunking); prints records embedded / recovered / lost, exceptions, hangs and
control characters that would reach the terminal. Exit 1 if any of those is not 0.

    python benchmarks/fuzz_streams.py [--streams 10000] [--seed 0] [--max-pieces 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the generator and checker the test suite runs too

import stream_fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-pieces", type=int, default=40, help="lines (records, junk) per stream, at most")
    args = ap.parse_args()
    fig = stream_fuzz.run(args.streams, seed=args.seed, max_pieces=args.max_pieces)
    print(f"fuzz_streams seed {args.seed}: {fig.summary()}")
    for f in fig.first_failures:
        print(f"  failure: {f}")
    return 0 if fig.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Dedup search speed: multi-index hashing vs a vectorized numpy brute force, in one run.

    .venv/bin/python benchmarks/bench_dedup.py [--n 1000000] [--radius 6] [--sample 2000]

Codes: ``n`` random 64-bit codes, 1% of them re-planted as near-duplicates (1 to
radius bits flipped). Baseline: numpy xor + popcount of every pair
(``hamming.brute_force_self_join``), timed on ``--sample`` rows and extrapolated to
all n(n−1)/2 pairs (said so in the output). One core (the process is pinned).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import dedup, hamming  # noqa: E402


def planted_codes(n: int, radius: int, seed: int = 0) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64)
    copies = rng.choice(n // 2, n // 100, replace=False)
    for i, source in enumerate(copies):
        flipped = codes[source]
        for bit in rng.choice(64, 1 + i % radius, replace=False):
            flipped ^= np.uint64(1) << np.uint64(bit)
        codes[n // 2 + i] = flipped
    return codes, len(copies)


def timed(function, *args):
    tracemalloc.start()
    started = time.perf_counter()
    out = function(*args)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--radius", type=int, default=dedup.DEFAULT_RADIUS)
    parser.add_argument("--reference", type=int, default=12_000)
    parser.add_argument("--sample", type=int, default=2000, help="brute-force rows timed")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    codes, planted = planted_codes(args.n, args.radius)
    print(f"{args.n:,} codes, {planted:,} planted near-duplicates, radius {args.radius}, one core")

    pairs, seconds, peak = timed(hamming.self_join, codes, args.radius)
    found = int((pairs.right >= args.n // 2).sum())
    print(
        f"multi-index self-join: {seconds:.2f} s, {len(pairs):,} pairs "
        f"({found:,} involve one of the {planted:,} planted copies), peak {peak / 2**20:.0f} MiB"
    )
    _, sample_seconds, _ = timed(hamming.brute_force_self_join, codes, args.radius, 0, args.sample)
    total_pairs = args.n * (args.n - 1) / 2
    sample_pairs = sum(args.n - 1 - i for i in range(args.sample))
    brute = sample_seconds * total_pairs / sample_pairs
    print(
        f"numpy brute force: {sample_seconds:.2f} s for {args.sample:,} rows, extrapolated to "
        f"all {total_pairs:,.0f} pairs: {brute:,.0f} s"
    )
    print(f"speed-up: {brute / seconds:.0f}x")

    reference = codes[: args.reference].copy()
    queries = codes
    index = hamming.HammingIndex(reference, args.radius)
    hits, seconds, peak = timed(index.query, queries)
    print(
        f"{args.n:,} candidates vs {args.reference:,} reference: {seconds:.2f} s, "
        f"{len(hits):,} matches, peak {peak / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()

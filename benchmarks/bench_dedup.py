"""Dedup search speed: multi-index hashing vs a vectorized numpy brute force, in one run.

    .venv/bin/python benchmarks/bench_dedup.py [--n 1000000] [--radius 6] [--sample 2000]

Codes: ``n`` random 64-bit codes, 1% of them re-planted as near-duplicates (1 to
radius bits flipped). Baseline: numpy xor + popcount of every pair
(``hamming.brute_force_self_join``), timed on ``--sample`` rows and extrapolated to
all n(n−1)/2 pairs (said so in the output). One core (the process is pinned).

Library baseline: FAISS's multi-index hashing, ``faiss.IndexBinaryMultiHash``, on the
same codes and radius, one thread: every code added, then ``range_search`` of every
code (FAISS keeps distances < its threshold, so radius + 1). Its tables are set so the
search is exact, like ours (pigeonhole: ``nhash`` tables of ``b`` bits probed within
``nflip`` bits); both settings that make sense at 64 bits are timed, and the pairs are
compared with ours.
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


#: (nhash, b, nflip) that keep FAISS exact: radius // nhash ≤ nflip for radius 6.
FAISS_SETTINGS = [(3, 21, 2), (4, 16, 1)]


def faiss_self_join(codes: np.ndarray, radius: int, nhash: int, bits: int, nflip: int):
    """Pairs (left < right) within ``radius`` bits by FAISS's IndexBinaryMultiHash."""
    import faiss

    if radius // nhash > nflip:
        raise ValueError(f"{nhash} tables probed within {nflip} bits miss pairs at {radius}")
    data = np.ascontiguousarray(codes).view(np.uint8).reshape(len(codes), 8)
    index = faiss.IndexBinaryMultiHash(64, nhash, bits)
    index.nflip = nflip
    index.add(data)
    limits, distances, neighbours = index.range_search(data, radius + 1)
    rows = np.repeat(np.arange(len(codes)), np.diff(limits).astype(np.int64))
    keep = rows < neighbours
    return rows[keep], neighbours[keep].astype(np.int64), distances[keep]


def compare_faiss(codes: np.ndarray, radius: int, pairs, ours_seconds: float) -> None:
    """Times FAISS on the same join and checks it finds the same pairs as ours."""
    try:
        import faiss
    except ImportError:
        print("FAISS: not installed (pip install faiss-cpu, the `bench` extra); skipped")
        return
    faiss.omp_set_num_threads(1)
    ours = set(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True))
    for nhash, bits, nflip in FAISS_SETTINGS:
        (left, right, _), seconds, peak = timed(faiss_self_join, codes, radius, nhash, bits, nflip)
        theirs = set(zip(left.tolist(), right.tolist(), strict=True))
        same = len(ours & theirs)
        print(
            f"FAISS IndexBinaryMultiHash({nhash} tables x {bits} bits, nflip {nflip}): "
            f"{seconds:.2f} s, {len(theirs):,} pairs, {same:,} equal to ours "
            f"(only ours: {len(ours - theirs)}, only FAISS: {len(theirs - ours)}); "
            f"ours / FAISS time: {ours_seconds / seconds:.2f}"
        )
        for pair in sorted(ours ^ theirs)[:10]:
            print(f"  differs: {pair} {'ours only' if pair in ours else 'FAISS only'}")


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
    compare_faiss(codes, args.radius, pairs, seconds)
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

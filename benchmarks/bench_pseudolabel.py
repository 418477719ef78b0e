"""Pseudo-label scoring speed: 100,000 candidate embeddings through K heads, in one run.

    .venv/bin/python benchmarks/bench_pseudolabel.py [--n 100000] [--dim 1280] [--folds 4]

Heads are trained for real (K-fold on 30 classes × 100 labeled embeddings); the
candidates are scored exactly as ``ScoreDoFn`` does (all K heads, the soft label,
the keep rule), in batches of 8,192 (Beam's BatchElements maximum in the stage).
Baseline: the same work one candidate at a time (what a DoFn without batching
does), timed on --sample rows and extrapolated (said so in the output).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import pseudolabel  # noqa: E402


def score(kfold, tau, x):
    probs = kfold.predict_proba(x)
    return pseudolabel.decide(probs, tau)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--batch", type=int, default=8192)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centers = np.abs(rng.standard_normal((30, args.dim))).astype(np.float32)
    y = np.repeat(np.arange(30), 100)
    x = centers[y] + 0.5 * np.abs(rng.standard_normal((len(y), args.dim))).astype(np.float32)
    started = time.perf_counter()
    config = pseudolabel.PseudolabelConfig(folds=args.folds)
    kfold = pseudolabel.train_kfold(x, y, config)
    tau = pseudolabel.calibrate_thresholds(kfold.oof, y, config).tau
    train_s = time.perf_counter() - started
    candidates = centers[rng.integers(0, 30, args.n)] + 0.5 * np.abs(
        rng.standard_normal((args.n, args.dim))
    ).astype(np.float32)
    started = time.perf_counter()
    kept = 0
    for i in range(0, args.n, args.batch):
        kept += int(score(kfold, tau, candidates[i : i + args.batch]).kept.sum())
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(args.sample):
        score(kfold, tau, candidates[i : i + 1])
    per_row_s = (time.perf_counter() - started) / args.sample * args.n
    print(f"cores available: {len(os.sched_getaffinity(0))}")
    print(f"train {args.folds} heads on {len(y)} labeled x {args.dim}-d: {train_s:.2f} s")
    print(
        f"score {args.n:,} candidates x {args.folds} heads, batches of {args.batch}: "
        f"{batched_s:.2f} s ({args.n / batched_s:,.0f}/s), {kept:,} kept"
    )
    print(
        f"baseline, one candidate at a time: {per_row_s:.1f} s (extrapolated from "
        f"{args.sample} rows)"
    )
    print(f"speed-up batched vs per-row: {per_row_s / batched_s:.1f}x; target < 10 s")


if __name__ == "__main__":
    main()

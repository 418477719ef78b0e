"""Pseudo-label scoring speed: 100,000 candidate embeddings through the keep rule, in one run.

    .venv/bin/python benchmarks/bench_pseudolabel.py [--n 100000] [--dim 1280] [--folds 4]

Heads are trained for real (K-fold on 30 classes × 100 labeled non-negative 1280-d
embeddings, except two few-shot classes with 3 and 2 images, so the prototype path runs
too). 20% of the candidates are OOD (shuffled features). The rule is calibrated as the
stage does (cleanlab, prototypes, δ from a 10,000-candidate pool sample), then every
candidate is scored as ``ScoreDoFn`` does (``OpenSetRule.score``: the batch normalized
once, the K heads as one matrix product, OOD z-score, few-shot prototypes, the rule), in
batches of 8,192 (Beam's BatchElements maximum in the stage).
Baseline, same run and candidates: the classic K-fold rule before issue 16 (each head's
sklearn ``predict_proba``, then ``pseudolabel.decide``).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import open_set, pseudolabel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8192)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centers = np.abs(rng.standard_normal((30, args.dim))).astype(np.float32)
    counts = np.full(30, 100)
    counts[28], counts[29] = 3, 2
    y = np.repeat(np.arange(30), counts)
    x = centers[y] + 0.5 * np.abs(rng.standard_normal((len(y), args.dim))).astype(np.float32)
    config = pseudolabel.PseudolabelConfig(folds=args.folds)
    started = time.perf_counter()
    kfold = pseudolabel.train_kfold(x, y, config)
    train_s = time.perf_counter() - started
    shows = rng.integers(0, 30, args.n)
    candidates = centers[shows] + 0.5 * np.abs(rng.standard_normal((args.n, args.dim))).astype(
        np.float32
    )
    ood = rng.random(args.n) < 0.2
    candidates[ood] = x[rng.integers(0, len(y), (ood.sum(), args.dim)), np.arange(args.dim)]
    query = shows.copy()

    started = time.perf_counter()
    classic_tau = pseudolabel.calibrate_thresholds(kfold.oof, y, config).tau
    classic_fit_s = time.perf_counter() - started
    started = time.perf_counter()
    rule, _ = open_set.fit_rule(x, y, kfold, candidates, query, config)
    fit_s = time.perf_counter() - started

    started = time.perf_counter()
    reasons: collections.Counter = collections.Counter()
    for i in range(0, args.n, args.batch):
        d = rule.score(candidates[i : i + args.batch], query[i : i + args.batch])
        reasons.update(d.reason.tolist())
    new_s = time.perf_counter() - started

    started = time.perf_counter()
    classic_kept = 0
    for i in range(0, args.n, args.batch):
        probs = kfold.predict_proba(candidates[i : i + args.batch])
        d_old = pseudolabel.decide(probs, classic_tau, query[i : i + args.batch], config)
        classic_kept += int(d_old.kept.sum())
    old_s = time.perf_counter() - started

    print(f"cores available: {len(os.sched_getaffinity(0))}")
    print(f"train {args.folds} heads on {len(y)} labeled x {args.dim}-d: {train_s:.2f} s")
    print(
        f"calibrate: classic thresholds {classic_fit_s:.2f} s; open-set rule (cleanlab, "
        f"prototypes, δ on a {min(args.n, config.pool_sample):,} pool sample) {fit_s:.2f} s"
    )
    kept = reasons.pop(None, 0)
    print(
        f"score {args.n:,} candidates, batches of {args.batch}, open-set rule: {new_s:.2f} s "
        f"({args.n / new_s:,.0f}/s); kept {kept:,}; dropped {dict(reasons)}"
    )
    print(
        f"baseline, classic K-fold rule (per-head sklearn + decide): {old_s:.2f} s "
        f"({args.n / old_s:,.0f}/s); kept {classic_kept:,} "
        f"(OOD truth: {int(ood.sum()):,} candidates)"
    )
    print(f"open-set / classic time: {new_s / old_s:.2f}x; target < 10 s")


if __name__ == "__main__":
    main()

"""Precision–coverage of rules (a), (b), (c) on controlled synthetic embeddings.

    .venv/bin/python benchmarks/pseudolabel_synthetic.py [--out FIGURE.png]

Like cleanlab's tests: Gaussian classes with known truth. Labeled set: 30 classes ×
60 embeddings (64-d), 5% of labels flipped. Candidates: 3,000 in-distribution
(truth known); 600 *off-class* (searched for one class, showing another: truth is
what they show); 900 *out-of-distribution* (scenes of none of the 30 classes, truth
none), half far away, half between two classes. A kept label is right when it
equals the truth; coverage = right kept labels / candidates that have a class.

Curves: (a) argmax on everything is one point; (b) one head on all labeled data,
a global threshold swept; (c) the K-fold rule with per-class τ_c, the target
precision swept (the default 0.98 is marked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import pseudolabel  # noqa: E402


def synthetic(seed: int = 0, dim: int = 64):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((30, dim)) * 1.6
    y = np.repeat(np.arange(30), 60)
    x = centers[y] + rng.standard_normal((len(y), dim))
    noisy = np.where(rng.random(len(y)) < 0.05, rng.integers(0, 30, len(y)), y)
    shows = rng.integers(0, 30, 3600)
    cand = centers[shows] + rng.standard_normal((3600, dim))
    query = shows.copy()
    query[3000:] = (shows[3000:] + rng.integers(1, 30, 600)) % 30  # off-class: wrong query
    far = rng.standard_normal((450, dim)) * 1.6 + rng.standard_normal(dim) * 1.6
    a, b = rng.integers(0, 30, 450), rng.integers(0, 30, 450)
    between = (centers[a] + centers[b]) / 2 + rng.standard_normal((450, dim))
    cand = np.concatenate([cand, far, between])
    truth = np.concatenate([shows, np.full(900, -1)])
    query = np.concatenate([query, rng.integers(0, 30, 900)])
    return x, noisy, cand, truth, query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=str(Path(__file__).with_name("pseudolabel_precision_coverage.png"))
    )
    args = parser.parse_args()
    x, y, cand, truth, query = synthetic()
    on_topic = truth >= 0
    single = pseudolabel.fit_head(x, y)
    p = single.predict_proba(cand)
    a = pseudolabel.precision_coverage(p.argmax(1), truth, np.ones(len(truth), bool), on_topic)
    b_curve = [
        pseudolabel.precision_coverage(p.argmax(1), truth, p.max(1) >= t, on_topic)
        for t in np.linspace(0.05, 0.99, 40)
    ]
    kfold = pseudolabel.train_kfold(x, y)
    head_probs = kfold.predict_proba(cand)
    c_curve, c_default = [], None
    for target in (0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0):
        config = pseudolabel.PseudolabelConfig(target_precision=target, threshold_floor=0.0)
        tau = pseudolabel.calibrate_thresholds(kfold.oof, y, config).tau
        d = pseudolabel.decide(head_probs, tau, query, config)
        point = pseudolabel.precision_coverage(d.label, truth, d.kept, on_topic)
        point["target"] = target
        c_curve.append(point)
    default = pseudolabel.DEFAULT_CONFIG
    tau = pseudolabel.calibrate_thresholds(kfold.oof, y, default).tau
    d = pseudolabel.decide(head_probs, tau, query, default)
    c_default = pseudolabel.precision_coverage(d.label, truth, d.kept, on_topic)
    with_query = pseudolabel.PseudolabelConfig(require_query_match=True)
    dq = pseudolabel.decide(head_probs, tau, query, with_query)
    c_query = pseudolabel.precision_coverage(dq.label, truth, dq.kept, on_topic)

    print(
        f"candidates {len(truth)} ({on_topic.sum()} with a class); OOF top-1 "
        f"{pseudolabel.top_k_accuracy(kfold.oof, y):.3f} on noisy labels"
    )
    print(
        f"(a) argmax, no filter:            precision {a['precision']:.3f} "
        f"coverage {a['coverage']:.3f}"
    )
    best_b = max(
        (r for r in b_curve if r["precision"] >= c_default["precision"]),
        key=lambda r: r["coverage"],
        default=None,
    )
    if best_b:
        print(
            f"(b) global threshold, best at (c)'s precision: precision {best_b['precision']:.3f} "
            f"coverage {best_b['coverage']:.3f}"
        )
    print(
        f"(c) K-fold rule, default (0.98):  precision {c_default['precision']:.3f} "
        f"coverage {c_default['coverage']:.3f}"
    )
    print(
        f"(c) + --query-match:              precision {c_query['precision']:.3f} "
        f"coverage {c_query['coverage']:.3f}"
    )
    for point in c_curve:
        print(
            f"    (c) target {point['target']:<5}: precision {point['precision']:.3f} "
            f"coverage {point['coverage']:.3f}"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 5))
    ax.plot(
        [r["coverage"] for r in b_curve],
        [r["precision"] for r in b_curve],
        "-o",
        markersize=3,
        label="(b) single head, global threshold swept",
    )
    ax.plot(
        [r["coverage"] for r in c_curve],
        [r["precision"] for r in c_curve],
        "-s",
        markersize=4,
        label="(c) K-fold rule, target precision swept",
    )
    ax.plot([a["coverage"]], [a["precision"]], "k*", markersize=12, label="(a) argmax, no filter")
    ax.plot(
        [c_default["coverage"]],
        [c_default["precision"]],
        "rD",
        markersize=8,
        label="(c) default: target 0.98",
    )
    ax.plot(
        [c_query["coverage"]],
        [c_query["precision"]],
        "g^",
        markersize=8,
        label="(c) default + query match",
    )
    ax.set_xlabel("coverage (right labels kept / candidates with a class)")
    ax.set_ylabel("precision of kept labels")
    ax.set_title("Synthetic: 5% label noise, off-class and OOD candidates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(args.out, dpi=90)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()

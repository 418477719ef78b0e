"""Precision and coverage of three pseudo-labeling rules against known truth.

(a) the teacher's argmax on everything, no filter (one head on all labeled data);
(b) that single head with one global threshold (the pooled OOF-calibrated one);
(c) the full K-fold rule: agreement, per-class τ_c, optional query match, cap.

Used by the demo (against the demo pool's truth file) and by
``benchmarks/pseudolabel_synthetic.py`` (controlled synthetic embeddings).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core import pseudolabel

RULES = {
    "a": "teacher argmax, no filter",
    "b": "single head, global threshold",
    "c": "K-fold rule, calibrated per-class thresholds",
}


def compare_rules(
    train_x: np.ndarray,
    train_y: np.ndarray,
    candidate_x: np.ndarray,
    truth: np.ndarray,
    query: np.ndarray | None = None,
    config: pseudolabel.PseudolabelConfig = pseudolabel.DEFAULT_CONFIG,
) -> dict[str, dict[str, Any]]:
    """{a, b, c} → kept, correct, precision, coverage (truth −1: no CamSDD class)."""
    truth = np.asarray(truth, np.int64)
    on_topic = truth >= 0
    single = pseudolabel.fit_head(train_x, train_y, config.regularization)
    probs = single.predict_proba(candidate_x)
    kfold = pseudolabel.train_kfold(train_x, train_y, config)
    thresholds = pseudolabel.calibrate_thresholds(kfold.oof, train_y, config)
    global_tau = max(
        thresholds.pooled if thresholds.pooled is not None else np.inf, config.threshold_floor
    )
    decisions = pseudolabel.decide(kfold.predict_proba(candidate_x), thresholds.tau, query, config)
    kept = decisions.kept & ~pseudolabel.cap_per_class(
        decisions.label, decisions.confidence, decisions.kept, config.max_per_class
    )
    out = {
        "a": pseudolabel.precision_coverage(
            probs.argmax(1), truth, np.ones(len(truth), bool), on_topic
        ),
        "b": pseudolabel.precision_coverage(
            probs.argmax(1), truth, probs.max(1) >= global_tau, on_topic
        ),
        "c": pseudolabel.precision_coverage(decisions.label, truth, kept, on_topic),
    }
    out["b"]["threshold"] = float(global_tau)
    for name, rule in RULES.items():
        out[name]["rule"] = rule
    return out


def render(results: dict[str, dict[str, Any]], candidates: int) -> str:
    """One line per rule: kept, precision, coverage."""
    lines = []
    for name, r in results.items():
        precision = "n/a" if np.isnan(r["precision"]) else f"{r['precision']:.3f}"
        lines.append(
            f"  ({name}) {r['rule']:<46} kept {r['kept']:>4} of {candidates}, "
            f"precision {precision}, coverage {r['coverage']:.3f}"
        )
    return "\n".join(lines)

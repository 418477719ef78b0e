"""Precision and coverage of the pseudo-labeling rules against known truth, and their curves.

(a) the teacher's argmax on everything, no filter (one head on all labeled data);
(b) that single head with one global threshold (the pooled OOF-calibrated one);
(c) the K-fold rule: noise-aware per-class τ_c (cleanlab), open-set rejection,
    the few-shot prototype rule, agreement, optional query match, cap
    (``open_set``);
(c classic) the K-fold rule before issue 16 (τ_c against the given labels, no OOD
    test, pooled τ for thin classes): the named baseline.

A curve is every operating point a rule reaches by its own knobs: (b) every
distinct global threshold; (c) its two knobs (target precision, then floor; see
``open_set.tau_path``). cov_r(p) = the most coverage rule r keeps at precision
≥ p; its *area* is the mean of cov_r(p) over p in [0.90, 0.995].

Used by the demo (against the demo pool's truth file), the stage's report and
``benchmarks/pseudolabel_synthetic.py`` (controlled synthetic embeddings).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pipeline.core import open_set, pseudolabel, query_prior

RULES = {
    "a": "teacher argmax, no filter",
    "b": "single head, global threshold",
    "c": "K-fold rule: noise-aware τ_c, open-set, few-shot",
    "c_classic": "K-fold rule before issue 16 (baseline)",
}
#: Precisions the curves' areas and the c ≥ b check are measured on.
P_GRID = np.round(np.arange(0.90, 0.995 + 1e-9, 0.0005), 4)


def envelope(points: list[tuple[float, float]], grid: np.ndarray = P_GRID) -> np.ndarray:
    """cov(p) on ``grid``: best coverage among (precision, coverage) points with precision ≥ p."""
    out = np.zeros(len(grid))
    for precision, coverage in points:
        if np.isnan(precision):
            continue
        out = np.where(grid <= precision + 1e-12, np.maximum(out, coverage), out)
    return out


def threshold_sweep(
    predicted: np.ndarray,
    confidence: np.ndarray,
    truth: np.ndarray,
    on_topic: np.ndarray,
    base: np.ndarray | None = None,
) -> list[tuple[float, float]]:
    """(precision, coverage) at every distinct global threshold on ``confidence``.

    Only rows passing ``base`` can be kept. Coverage = right kept / ``on_topic`` rows.
    """
    base = np.ones(len(predicted), bool) if base is None else np.asarray(base, bool)
    order = np.argsort(-np.asarray(confidence), kind="stable")
    order = order[base[order]]
    if not len(order):
        return []
    hits = np.cumsum(np.asarray(predicted)[order] == np.asarray(truth)[order])
    conf = np.asarray(confidence)[order]
    last = np.r_[conf[1:] != conf[:-1], True]
    total = max(int(np.sum(on_topic)), 1)
    k = np.arange(1, len(order) + 1)
    return list(zip((hits / k)[last].tolist(), (hits / total)[last].tolist(), strict=True))


def rule_c_points(
    label: np.ndarray,
    confidence: np.ndarray,
    reason: np.ndarray,
    truth: np.ndarray,
    on_topic: np.ndarray,
    path: list[np.ndarray],
    query: np.ndarray | None = None,
) -> list[tuple[float, float]]:
    """(c)'s operating points along a τ path (``open_set.tau_path``: (τ, τ^Q) pairs).

    Rows dropped for anything but low confidence stay dropped; the others are kept
    when their confidence reaches τ of their label, or τ^Q when labeled as their
    ``query`` (the per-class cap is left out).
    """
    label = np.asarray(label, np.int64)
    confidence = np.asarray(confidence, np.float64)
    base = np.array([r is None or r == pseudolabel.LOW_CONFIDENCE for r in reason], bool)
    points = []
    for tau in path:
        tau = np.asarray(tau, np.float64)
        tau, query_tau = (tau[0], tau[1]) if tau.ndim == 2 else (tau, None)
        kept = base & (confidence >= query_prior.effective_tau(label, query, tau, query_tau))
        r = pseudolabel.precision_coverage(label, truth, kept, on_topic)
        points.append((r["precision"], r["coverage"]))
    return points


# The rule's own switches (``--no-agreement``, then also ``--no-ood``), turned off in
# turn: the low-precision end of (c)'s curve, where a user trades precision for coverage.
RELAXATIONS = ({"require_agreement": False}, {"require_agreement": False, "ood": False})


def relaxed_points(
    rule: open_set.OpenSetRule,
    x: np.ndarray,
    query: np.ndarray | None,
    truth: np.ndarray,
    on_topic: np.ndarray,
    path: list[np.ndarray],
) -> list[tuple[float, float]]:
    """(c)'s points along ``path`` with each of RELAXATIONS applied (embeddings ``x``)."""
    points = []
    for change in RELAXATIONS:
        config = dataclasses.replace(rule.config, **change)
        d = dataclasses.replace(rule, config=config).score(x, query)
        points += rule_c_points(d.label, d.confidence, d.reason, truth, on_topic, path, query)
    return points


def area(curve: np.ndarray) -> float:
    """Mean coverage over the precision grid."""
    return float(np.mean(curve))


def compare_rules(
    train_x: np.ndarray,
    train_y: np.ndarray,
    candidate_x: np.ndarray,
    truth: np.ndarray,
    query: np.ndarray | None = None,
    config: pseudolabel.PseudolabelConfig = pseudolabel.DEFAULT_CONFIG,
    curves: bool = False,
) -> dict[str, Any]:
    """{a, b, c, c_classic} → kept, correct, precision, coverage (truth −1: no CamSDD class).

    (c) calibrates δ with the candidates themselves as the pool (as the stage does
    with its dedup-kept candidates). With ``curves``, also "curves": {a, b, c:
    cov(p) on P_GRID} and "areas".
    """
    truth = np.asarray(truth, np.int64)
    on_topic = truth >= 0
    single = pseudolabel.fit_head(train_x, train_y, config.regularization)
    probs = single.predict_proba(candidate_x)
    kfold = pseudolabel.train_kfold(train_x, train_y, config)
    classic = pseudolabel.calibrate_thresholds(kfold.oof, train_y, config)
    global_tau = max(
        classic.pooled if classic.pooled is not None else np.inf, config.threshold_floor
    )
    classic_d = pseudolabel.decide(kfold.predict_proba(candidate_x), classic.tau, query, config)
    classic_kept = classic_d.kept & ~pseudolabel.cap_per_class(
        classic_d.label, classic_d.confidence, classic_d.kept, config.max_per_class
    )
    pool_query = np.full(len(truth), -1, np.int64) if query is None else np.asarray(query, np.int64)
    rule, noise = open_set.fit_rule(train_x, train_y, kfold, candidate_x, pool_query, config)
    d = rule.score(candidate_x, query)
    kept = d.kept & ~pseudolabel.cap_per_class(d.label, d.confidence, d.kept, config.max_per_class)
    out: dict[str, Any] = {
        "a": pseudolabel.precision_coverage(
            probs.argmax(1), truth, np.ones(len(truth), bool), on_topic
        ),
        "b": pseudolabel.precision_coverage(
            probs.argmax(1), truth, probs.max(1) >= global_tau, on_topic
        ),
        "c": pseudolabel.precision_coverage(d.label, truth, kept, on_topic),
        "c_classic": pseudolabel.precision_coverage(classic_d.label, truth, classic_kept, on_topic),
    }
    out["b"]["threshold"] = float(global_tau)
    for name, rule_name in RULES.items():
        out[name]["rule"] = rule_name
    out["c"]["reasons"] = {
        str(r): int((d.reason == r).sum()) for r in set(d.reason.tolist()) if r is not None
    }
    out["c"]["ood_delta"] = float(rule.model.ood.delta)
    if curves:
        a = out["a"]
        path = open_set.tau_path(kfold.oof, train_y, noise, rule.model, config)
        c_points = rule_c_points(d.label, d.confidence, d.reason, truth, on_topic, path, query)
        c_points += relaxed_points(rule, candidate_x, query, truth, on_topic, path)
        c_points.append((out["c"]["precision"], out["c"]["coverage"]))
        b_points = threshold_sweep(probs.argmax(1), probs.max(1), truth, on_topic)
        out["points"] = {"a": [(a["precision"], a["coverage"])], "b": b_points, "c": c_points}
        out["curves"] = {k: envelope(v) for k, v in out["points"].items()}
        out["areas"] = {k: area(v) for k, v in out["curves"].items()}
    return out


def render(results: dict[str, Any], candidates: int) -> str:
    """One line per rule: kept, precision, coverage (and the curves' areas, if measured)."""
    lines = []
    for name in RULES:
        if name not in results:
            continue
        r = results[name]
        precision = "n/a" if np.isnan(r["precision"]) else f"{r['precision']:.3f}"
        label = f"({name})" if name != "c_classic" else "(c, classic)"
        lines.append(
            f"  {label} {r['rule']:<50} kept {r['kept']:>4} of {candidates}, "
            f"correct {r['correct']:>4}, precision {precision}, coverage {r['coverage']:.3f}"
        )
    if "areas" in results:
        lines.append(
            "  precision-coverage areas (mean coverage over precision 0.90-0.995): "
            + ", ".join(f"({k}) {v:.3f}" for k, v in results["areas"].items())
        )
    return "\n".join(lines)

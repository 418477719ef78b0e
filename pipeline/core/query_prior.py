"""The crawl's query as a second view: thresholds for candidates labeled as their query.

A candidate crawled for class q that the heads also label q has two views agreeing,
and is right more often than the heads' confidence alone says. How much more depends
on how often the query is right and on how often the heads say q:

    π_q      share of query q's candidates truly of class q (the pool's own estimate)
    TPR_q(t) OOF: share of class-q images the heads label q with confidence ≥ t
    FPR_q(t) OOF: share of other images the heads label q with confidence ≥ t

    precision_q(t) = π_q·TPR_q(t) / (π_q·TPR_q(t) + (1 − π_q)·FPR_q(t))

π_q is the method of moments on the share r_q of q's candidates the heads label q
(r_q = π_q·TPR_q + (1 − π_q)·FPR_q at t = 0), shrunk toward the pool-wide estimate by
``strength`` pseudo-candidates, so a query with three candidates does not decide its
own prior. FPR is add-one smoothed: no observed error is not read as no error.
τ^Q_q is the lowest t whose estimated precision reaches the target, never below the
floor. Only classes with their own OOF predictions get one (few-shot and absent
classes do not); images of no class at all are the OOD test's job, not this estimate's.
numpy in, numpy out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

RULE = (
    "A candidate the heads label as the class it was crawled for meets τ^Q instead of τ_c "
    "when lower. τ^Q is the lowest confidence t at which the estimated precision "
    "π·TPR(t) / (π·TPR(t) + (1 − π)·FPR(t)) reaches the target: TPR and FPR are the heads' "
    "out-of-fold rates of saying the class with confidence ≥ t for its own images and for "
    "others' (FPR add-one smoothed); π, the share of the query's candidates truly of the "
    "class, is read off the pool (the share the heads label as the query, corrected by those "
    "rates) and shrunk toward the pool-wide value. Few-shot classes get none. "
    "Off with --no-query-prior."
)


@dataclasses.dataclass
class QueryEvidence:
    """Per class: τ^Q and what it was computed from (NaN / inf: not applicable).

    Attributes:
      tau: (C,) threshold for candidates labeled as their query (inf: none).
      prior: (C,) π_q used (shrunk).
      raw_prior: (C,) π_q from the query's own candidates alone.
      candidates: (C,) pool candidates crawled for the class (the sample scored).
      pooled_prior: the pool-wide π the per-query estimates are shrunk toward.
    """

    tau: np.ndarray
    prior: np.ndarray
    raw_prior: np.ndarray
    candidates: np.ndarray
    pooled_prior: float


def query_thresholds(
    oof: np.ndarray,
    y: np.ndarray,
    pool_label: np.ndarray,
    pool_query: np.ndarray,
    eligible: np.ndarray,
    target: float,
    floor: float,
    strength: float = 10.0,
    exclude: np.ndarray | None = None,
) -> QueryEvidence:
    """τ^Q per class from OOF probabilities (n, C) and the pool's (label, query) pairs.

    ``eligible``: (C,) classes calibrated on their own OOF predictions. ``exclude``:
    labeled rows left out of TPR/FPR (labels cleanlab flags).
    """
    oof = np.asarray(oof, np.float64)
    y = np.asarray(y, np.int64)
    num_classes = oof.shape[1]
    keep = np.ones(len(y), bool) if exclude is None else ~np.asarray(exclude, bool)
    predicted = oof.argmax(1)
    pool_label = np.asarray(pool_label, np.int64)
    pool_query = np.asarray(pool_query, np.int64)
    candidates = np.bincount(pool_query[pool_query >= 0], minlength=num_classes)
    agreeing = np.bincount(
        pool_query[(pool_query >= 0) & (pool_label == pool_query)], minlength=num_classes
    )
    nan = np.full(num_classes, np.nan)
    raw, tpr0, fpr0 = nan.copy(), nan.copy(), nan.copy()
    for c in np.flatnonzero(np.asarray(eligible, bool) & (candidates > 0)):
        pos, neg = keep & (y == c), keep & (y != c)
        if not pos.any():
            continue
        said = predicted == c
        tpr0[c] = (said & pos).sum() / pos.sum()
        fpr0[c] = ((said & neg).sum() + 1) / (neg.sum() + 2)
        if tpr0[c] > fpr0[c]:
            r = agreeing[c] / candidates[c]
            raw[c] = np.clip((r - fpr0[c]) / (tpr0[c] - fpr0[c]), 0.0, 1.0)
    known = np.isfinite(raw)
    pooled = float(np.average(raw[known], weights=candidates[known])) if known.any() else 0.0
    prior = np.where(known, (candidates * np.nan_to_num(raw) + strength * pooled), np.nan) / (
        candidates + strength
    )
    tau = thresholds_at(oof, y, prior, target, floor, exclude)
    return QueryEvidence(tau, prior, raw, candidates, pooled)


def thresholds_at(
    oof: np.ndarray,
    y: np.ndarray,
    prior: np.ndarray,
    target: float,
    floor: float,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """(C,) τ^Q for the classes with a prior (NaN: inf), at ``target`` and ``floor``."""
    oof = np.asarray(oof, np.float64)
    y = np.asarray(y, np.int64)
    keep = np.ones(len(y), bool) if exclude is None else ~np.asarray(exclude, bool)
    predicted, confidence = oof.argmax(1), oof.max(1)
    tau = np.full(oof.shape[1], np.inf)
    for c in np.flatnonzero(np.isfinite(prior)):
        pos, neg = keep & (y == c), keep & (y != c)
        tau[c] = _lowest(confidence, predicted == c, pos, neg, prior[c], target, floor)
    return tau


def _lowest(
    confidence: np.ndarray,
    said: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    prior: float,
    target: float,
    floor: float,
) -> float:
    """Lowest t whose estimated precision for query-agreeing candidates reaches ``target``."""
    mine = said & (pos | neg)
    order = np.argsort(-confidence[mine], kind="stable")
    conf = confidence[mine][order]
    if not len(conf):
        return np.inf
    tp = np.cumsum(pos[mine][order]) / pos.sum()
    fp = (np.cumsum(neg[mine][order]) + 1) / (neg.sum() + 2)
    precision = prior * tp / np.maximum(prior * tp + (1 - prior) * fp, 1e-12)
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    ok = (precision >= target) & last_of_tie & (tp > 0)
    if not ok.any():
        return np.inf
    # As ``pseudolabel.lowest_threshold``: all predictions meeting the target gives the floor.
    t = floor if ok[-1] else float(conf[np.flatnonzero(ok).max()])
    return float(max(t, floor))


def effective_tau(
    label: np.ndarray, query: np.ndarray | None, tau: np.ndarray, query_tau: np.ndarray | None
) -> np.ndarray:
    """(n,) the threshold each candidate must reach: τ^Q when labeled as its query."""
    label = np.asarray(label, np.int64)
    out = np.asarray(tau, np.float64)[label]
    if query is None or query_tau is None:
        return out
    agree = np.asarray(query, np.int64) == label
    return np.where(agree, np.minimum(out, np.asarray(query_tau, np.float64)[label]), out)

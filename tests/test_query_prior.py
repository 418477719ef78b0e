"""The crawl query as a second view (``core.query_prior``): numbers by hand, then a rule."""

import numpy as np
import pytest

from pipeline.core import open_set, query_prior
from pipeline.core import pseudolabel as pl


def _oof() -> tuple[np.ndarray, np.ndarray]:
    """30 labeled images of 3 classes; what the heads said about each, out of fold.

    class 0: 5 said 0 (0.9, 0.8, 0.7, 0.6, 0.5), 5 said 1 (0.5)
    class 1: 3 said 0 (0.55, 0.45, 0.4), 7 said 1 (0.8)
    class 2: 10 said 2 (0.9)
    """
    said = [(0, 0.9), (0, 0.8), (0, 0.7), (0, 0.6), (0, 0.5)] + [(1, 0.5)] * 5
    said += [(0, 0.55), (0, 0.45), (0, 0.4)] + [(1, 0.8)] * 7 + [(2, 0.9)] * 10
    oof = np.zeros((30, 3))
    for i, (c, p) in enumerate(said):
        oof[i] = (1 - p) / 2
        oof[i, c] = p
    return oof, np.repeat(np.arange(3), 10)


def _pool(query: int, n: int, agreeing: int) -> tuple[np.ndarray, np.ndarray]:
    label = np.array([query] * agreeing + [(query + 1) % 3] * (n - agreeing))
    return label, np.full(n, query)


def test_prior_and_threshold_by_hand():
    oof, y = _oof()
    label, query = _pool(0, 20, 8)  # the heads label 8 of query 0's 20 candidates as 0
    e = query_prior.query_thresholds(oof, y, label, query, np.ones(3, bool), 0.95, 0.3, 0.0)
    tpr0, fpr0 = 5 / 10, (3 + 1) / (20 + 2)  # FPR add-one smoothed
    assert e.raw_prior[0] == pytest.approx((8 / 20 - fpr0) / (tpr0 - fpr0))  # 0.686
    assert e.prior[0] == pytest.approx(e.raw_prior[0])  # strength 0: no shrinking
    # At t = 0.6: TPR 4/10, FPR (0 + 1)/22 → precision 0.950; at 0.55 a class-1 image
    # joins: FPR 2/22 → 0.906. So τ^Q = 0.6, below what the heads alone could earn.
    assert e.tau[0] == pytest.approx(0.6)
    assert np.isinf(e.tau[1:]).all() and np.isnan(e.prior[1:]).all()  # no candidates
    # A lower target admits the tie at 0.5 (TPR 5/10, FPR 2/22 → 0.923).
    assert query_prior.thresholds_at(oof, y, e.prior, 0.92, 0.3)[0] == pytest.approx(0.5)
    # The floor still holds.
    assert query_prior.thresholds_at(oof, y, e.prior, 0.92, 0.65)[0] == pytest.approx(0.65)


def test_a_query_the_heads_disagree_with_earns_nothing():
    oof, y = _oof()
    label, query = _pool(0, 20, 4)  # r = 0.2, barely above the heads' false-positive rate
    e = query_prior.query_thresholds(oof, y, label, query, np.ones(3, bool), 0.95, 0.3, 0.0)
    assert e.raw_prior[0] < 0.1 and np.isinf(e.tau[0])


def test_small_queries_are_shrunk_toward_the_pool_and_ineligible_classes_get_none():
    oof, y = _oof()
    l0, q0 = _pool(0, 20, 8)
    label, query = np.r_[l0, 1, 2], np.r_[q0, 1, 2]  # one candidate each for 1 and 2
    eligible = np.array([True, True, False])  # class 2: few-shot, say
    e = query_prior.query_thresholds(oof, y, label, query, eligible, 0.95, 0.3, 10.0)
    assert e.raw_prior[1] == 1.0  # its one candidate agrees: alone it would be certain
    pooled = (20 * e.raw_prior[0] + 1 * 1.0) / 21
    assert e.pooled_prior == pytest.approx(pooled)
    assert e.prior[1] == pytest.approx((1.0 + 10 * pooled) / 11)
    assert e.prior[0] == pytest.approx((20 * e.raw_prior[0] + 10 * pooled) / 30)
    assert np.isnan(e.prior[2]) and np.isinf(e.tau[2])


def test_effective_tau_is_lower_only_for_candidates_labeled_as_their_query():
    tau, query_tau = np.array([0.8, 0.7, 0.9]), np.array([0.6, np.inf, 0.95])
    label, query = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, -1])
    got = query_prior.effective_tau(label, query, tau, query_tau)
    np.testing.assert_allclose(got, [0.6, 0.8, 0.7, 0.9, 0.9])
    np.testing.assert_allclose(query_prior.effective_tau(label, None, tau, query_tau), tau[label])


def test_query_agreement_raises_coverage_at_the_same_precision():
    # Few labels per class (weak heads); a crawl whose queries are right 70% of the
    # time, wrong (another class) 20%, and of no class at all 10%.
    rng = np.random.default_rng(3)
    classes, dim = 20, 32
    centers = rng.standard_normal((classes, dim)) * 0.7  # OOF top-1 about 0.7
    y = np.repeat(np.arange(classes), 6)
    x = (centers[y] + rng.standard_normal((len(y), dim))).astype(np.float32)
    n = 2000
    truth = rng.integers(0, classes, n)
    cand = (centers[truth] + rng.standard_normal((n, dim))).astype(np.float32)
    query = truth.copy()
    wrong = rng.random(n) < 0.2
    query[wrong] = (truth[wrong] + rng.integers(1, classes, wrong.sum())) % classes
    ood = rng.random(n) < 0.1
    cand[ood] = (rng.standard_normal((ood.sum(), dim)) * 3).astype(np.float32)
    truth = np.where(ood, -1, truth)
    kfold = pl.train_kfold(x, y)
    on = truth >= 0
    results = {}
    for prior in (False, True):
        config = pl.PseudolabelConfig(query_prior=prior)
        rule, _ = open_set.fit_rule(x, y, kfold, cand, query, config)
        d = rule.score(cand, query)
        results[prior] = pl.precision_coverage(d.label, truth, d.kept, on)
        if prior:
            assert rule.model.query is not None
            kept_by_query = d.kept & (d.label == query)
            assert kept_by_query.sum() > 0
            # the pool's own estimate of how often a query is right: truly 0.8 × 0.9
            assert 0.55 < rule.model.query.pooled_prior < 0.85
        else:
            assert rule.model.query is None
    assert results[True]["precision"] >= 0.95
    assert results[True]["coverage"] > results[False]["coverage"] + 0.03

"""The K-fold self-distillation core on hand-computed cases and controlled synthetic data."""

import numpy as np
import pytest

from pipeline.core import pseudolabel as pl
from pipeline.core import pseudolabel_eval
from pipeline.core.classes import NUM_CLASSES


def probs(rows: dict[int, float]) -> np.ndarray:
    """A NUM_CLASSES vector with the given class probabilities."""
    p = np.zeros(NUM_CLASSES, np.float32)
    for c, v in rows.items():
        p[c] = v
    return p


def test_lowest_threshold_hand_cases():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    right = np.array([True, True, False, True])
    # precision from the top: 1, 1, 2/3, 3/4
    assert pl.lowest_threshold(conf, right, 0.75) == 0.6
    assert pl.lowest_threshold(conf, right, 0.8) == 0.8
    assert pl.lowest_threshold(conf, right, 0.8, min_support=3) is None
    # A tie keeps both tied predictions: 0.7 would keep the wrong one too.
    assert pl.lowest_threshold([0.9, 0.7, 0.7], [True, True, False], 1.0) == 0.9
    assert pl.lowest_threshold([], [], 0.9) is None


def test_thresholds_per_class_pooled_unreachable_and_floor():
    config = pl.PseudolabelConfig(target_precision=0.9, threshold_floor=0.3, min_support=3)
    oof, y = [], []
    for conf in (0.95, 0.9, 0.85, 0.8):  # class 0: right at every confidence
        oof.append(probs({0: conf, 1: 1 - conf}))
        y.append(0)
    oof.append(probs({0: 0.7, 1: 0.3}))  # a wrong class-0 prediction below them
    y.append(1)
    for conf in (0.8, 0.75, 0.7):  # class 2: wrong at 0.75, so 2/3 at best with 3 kept
        oof.append(probs({2: conf, 3: 1 - conf}))
        y.append(3 if conf == 0.75 else 2)
    oof.append(probs({4: 0.25, 5: 0.2}))  # class 4: one prediction, right, low confidence
    y.append(4)
    t = pl.calibrate_thresholds(np.array(oof), np.array(y), config)
    assert t.kind[0] == pl.TAU_CLASS and t.tau[0] == pytest.approx(0.8)
    assert t.kind[2] == pl.TAU_UNREACHABLE and np.isinf(t.tau[2])
    # Pooled (all nine): precision from the top is 1 down to 0.8, then 5/6, 6/8, 7/9.
    assert t.pooled == pytest.approx(0.8)
    assert t.kind[4] == pl.TAU_POOLED and t.tau[4] == pytest.approx(0.8)
    assert list(t.support[:5]) == [5, 0, 3, 0, 1]
    floored = pl.calibrate_thresholds(
        np.array(oof), np.array(y), pl.PseudolabelConfig(target_precision=0.5, min_support=1)
    )
    assert floored.tau[4] == 0.5  # 0.25 is below the default floor


def test_decide_applies_each_rule_and_records_the_first_failure():
    tau = np.full(NUM_CLASSES, 0.6)
    heads = np.stack(
        [
            [probs({0: 0.9}), probs({1: 0.5, 2: 0.4}), probs({3: 0.9}), probs({5: 0.8})],
            [probs({0: 0.8}), probs({1: 0.55}), probs({3: 0.3, 4: 0.7}), probs({5: 0.9})],
        ]
    )
    query = np.array([0, 1, 3, 6])
    config = pl.PseudolabelConfig(require_query_match=True)
    d = pl.decide(heads, tau, query, config)
    assert list(d.label) == [0, 1, 3, 5]
    assert np.allclose(d.confidence, [0.85, 0.525, 0.6, 0.85])
    assert list(d.agree) == [True, True, False, True]
    assert list(d.reason) == [None, pl.LOW_CONFIDENCE, pl.FOLD_DISAGREEMENT, pl.QUERY_MISMATCH]
    assert list(d.kept) == [True, False, False, False]
    assert np.allclose(d.soft_label[0], probs({0: 0.85}))
    # Rules switched off no longer drop; an unknown query (-1) always passes.
    loose = pl.PseudolabelConfig(require_agreement=False, require_query_match=False)
    assert list(pl.decide(heads, tau, query, loose).reason) == [None, pl.LOW_CONFIDENCE, None, None]
    unknown = pl.decide(heads, tau, np.array([-1, -1, -1, -1]), config)
    assert unknown.reason[3] is None


def test_cap_keeps_the_most_confident_of_each_class():
    label = np.array([0, 0, 0, 1, 1, 0])
    conf = np.array([0.7, 0.9, 0.8, 0.6, 0.95, 0.99])
    kept = np.array([True, True, True, True, True, False])
    over = pl.cap_per_class(label, conf, kept, cap=2)
    assert list(over) == [True, False, False, False, False, False]
    assert not pl.cap_per_class(label, conf, kept, cap=0).any()


def test_topk_ece_and_label_issue_ranking_by_hand():
    p = np.array(
        [probs({0: 0.6, 1: 0.3, 2: 0.1}), probs({1: 0.8, 0: 0.2}), probs({2: 0.5, 1: 0.4})]
    )
    y = np.array([1, 1, 0])
    assert pl.top_k_accuracy(p, y, 1) == pytest.approx(1 / 3)
    assert pl.top_k_accuracy(p, y, 2) == pytest.approx(2 / 3)
    # Bins of 0.1: {0.6: wrong}, {0.8: right}, {0.5: wrong} → |0-0.6|+|1-0.8|+|0-0.5| over 3
    assert pl.expected_calibration_error(p, y) == pytest.approx((0.6 + 0.2 + 0.5) / 3)
    # Suspects: rows 0 (p[label]=0.3) and 2 (p[label]=0): worst first.
    assert list(pl.label_issues(p, y)) == [2, 0]


def test_folds_are_stratified_seeded_and_tolerate_thin_classes():
    y = np.array([0] * 8 + [1] * 8 + [2] * 2)
    a = pl.fold_ids(y, 4, seed=1)
    assert list(a) == list(pl.fold_ids(y, 4, seed=1))
    for c in (0, 1):
        assert sorted(np.bincount(a[y == c], minlength=4)) == [2, 2, 2, 2]
    assert len(set(a[y == 2])) == 2  # a thin class spreads over as many folds as it has
    with pytest.raises(ValueError, match="cannot be split into 4 folds"):
        pl.fold_ids(np.array([0, 1, 0]), 4)


def clusters(rng, n_per_class: int, classes: int = 12, dim: int = 32, spread: float = 0.6):
    centers = rng.standard_normal((classes, dim)) * 2
    y = np.repeat(np.arange(classes), n_per_class)
    return centers, centers[y] + spread * rng.standard_normal((len(y), dim)), y


def test_oof_probabilities_come_from_the_head_that_never_saw_the_image():
    rng = np.random.default_rng(0)
    _, x, y = clusters(rng, 12)
    kfold = pl.train_kfold(x, y, pl.PseudolabelConfig(folds=4))
    for i in (0, 17, 100):
        assert np.allclose(kfold.oof[i], kfold.heads[kfold.fold[i]].predict_proba(x[i : i + 1])[0])
    assert pl.top_k_accuracy(kfold.oof, y) > 0.9
    assert kfold.predict_proba(x[:5]).shape == (4, 5, NUM_CLASSES)


def test_kfold_rule_rejects_out_of_distribution_candidates_the_argmax_keeps():
    rng = np.random.default_rng(1)
    centers, x, y = clusters(rng, 40)
    wrong = rng.random(len(y)) < 0.05  # label noise in the labeled set
    y_noisy = np.where(wrong, rng.integers(0, len(centers), len(y)), y)
    cand_y = rng.integers(0, len(centers), 600)
    in_dist = centers[cand_y] + 0.6 * rng.standard_normal((600, x.shape[1]))
    ood = rng.standard_normal((300, x.shape[1])) * 2  # new scenes: none of the classes
    cand = np.concatenate([in_dist, ood])
    truth = np.concatenate([cand_y, np.full(300, -1)])
    results = pseudolabel_eval.compare_rules(x, y_noisy, cand, truth)
    assert results["a"]["precision"] < 0.75  # every OOD candidate gets some label
    assert results["c"]["precision"] >= 0.98 and results["c"]["coverage"] > 0.25
    assert results["c"]["precision"] >= results["b"]["precision"]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="folds"):
        pl.PseudolabelConfig(folds=1)
    with pytest.raises(ValueError, match="target precision"):
        pl.PseudolabelConfig(target_precision=1.5)
    with pytest.raises(ValueError, match="max_per_class"):
        pl.PseudolabelConfig(max_per_class=-1)

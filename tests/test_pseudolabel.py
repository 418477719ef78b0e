"""The K-fold self-distillation core on hand-computed cases and controlled synthetic data."""

import numpy as np
import pytest

from pipeline.core import open_set, pseudolabel_eval
from pipeline.core import pseudolabel as pl
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


def test_folds_when_no_class_fills_every_fold():
    y = np.repeat(np.arange(10), 3)  # 3 images per class, K = 4
    ids = pl.fold_ids(y, 4)
    assert set(ids.tolist()) == {0, 1, 2, 3}
    for c in range(10):  # a class's images land in distinct folds
        assert len(set(ids[y == c].tolist())) == 3
    np.testing.assert_array_equal(ids, pl.fold_ids(y, 4))  # seeded
    assert np.bincount(ids).max() - np.bincount(ids).min() <= 1  # folds balanced
    kfold = pl.train_kfold(np.random.default_rng(0).standard_normal((30, 8)), y)
    assert kfold.oof.shape == (30, pl.NUM_CLASSES)


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


# ------------------------------------------------------------------ the open-set rule


def test_lowest_threshold_floor_weights_and_fractions():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    right = np.array([1, 1, 0, 1.0])
    assert pl.lowest_threshold(conf, right, 0.75) == pytest.approx(0.6)
    # Everything meets the target: the floor, not the lowest OOF confidence.
    assert pl.lowest_threshold(conf, np.ones(4), 0.9, floor=0.5) == 0.5
    assert pl.lowest_threshold(conf, np.ones(4), 0.9) == pytest.approx(0.6)
    # Weight 0 leaves a prediction out (a cleanlab-flagged image, noise_method="exclude").
    weight = np.array([1, 1, 0, 1.0])
    assert pl.lowest_threshold(conf, right, 1.0, weight=weight) == pytest.approx(0.6)
    assert pl.lowest_threshold(conf, right, 1.0) == pytest.approx(0.8)


def test_stacked_heads_match_the_heads_one_by_one():
    rng = np.random.default_rng(3)
    _, x, y = clusters(rng, 10, classes=6)
    kfold = pl.train_kfold(x, y)
    assert np.allclose(
        kfold.stacked().predict_proba(x[:40]), kfold.predict_proba(x[:40]), atol=1e-5
    )
    two = pl.train_kfold(x[y < 2], y[y < 2])  # binary heads: one coefficient row
    assert np.allclose(two.stacked().predict_proba(x[:40]), two.predict_proba(x[:40]), atol=1e-5)


def test_calibrate_ood_ignores_contamination_of_the_proxies():
    rng = np.random.default_rng(0)
    ids = rng.normal(0, 1, 2000)
    ood = rng.normal(8, 1, 2000)
    clean = open_set.calibrate_ood(ids, {"p": ood}, pick="middle")
    mixed = open_set.calibrate_ood(ids, {"p": np.r_[ood, rng.normal(0, 1, 1500)]}, pick="middle")
    assert 3 < clean.delta < 6 and abs(clean.delta - mixed.delta) < 1.0
    assert clean.id_loss < 0.01 and clean.proxy_rejected["p"] > 0.99
    # The held-out loss bound holds even when the proxies overlap the labeled images.
    tight = open_set.calibrate_ood(ids, {"p": rng.normal(0.5, 1, 2000)}, max_id_loss=0.05)
    assert tight.id_loss <= 0.05


def _toy(seed=0, support=None, noise=0.0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((30, 32)) * 2
    counts = np.full(30, 20)
    for c, k in (support or {}).items():
        counts[c] = k
    y = np.repeat(np.arange(30), counts)
    x = (centers[y] + rng.standard_normal((len(y), 32))).astype(np.float32)
    flip = rng.random(len(y)) < noise
    noisy = np.where(flip, (y + rng.integers(1, 30, len(y))) % 30, y)
    return x, noisy, y, centers, rng


def test_label_noise_handles_absent_and_tiny_classes_and_finds_flips():
    x, y, _, _, _ = _toy(support={29: 0, 28: 1, 27: 2})
    kfold = pl.train_kfold(x, y)
    noise = open_set.estimate_label_noise(kfold.oof, y, 4)
    assert not noise.modeled[[27, 28, 29]].any() and np.isnan(noise.noise_rate[[27, 28, 29]]).all()
    assert not noise.issue[np.isin(y, [27, 28])].any()
    assert np.nanmax(noise.noise_rate) < 0.1  # clean labels
    x, noisy, truth, _, _ = _toy(seed=1, noise=0.15)
    kfold = pl.train_kfold(x, noisy)
    noise = open_set.estimate_label_noise(kfold.oof, noisy, 4)
    flipped = noisy != truth
    assert (
        noise.issue[flipped].mean() > 0.6
        and (noisy[noise.issue] != truth[noise.issue]).mean() > 0.8
    )
    assert 0.07 < np.nanmean(noise.noise_rate) < 0.3


def test_noise_aware_thresholds_ignore_flagged_labels():
    # 15% flipped labels cap the OOF precision against the given labels near 0.85, so a
    # 0.98 target is unreachable for the classic rule; against cleanlab's cleaned labels
    # it is reachable and the τ_c come down to the floor.
    x, noisy, _, _, _ = _toy(seed=2, noise=0.15, support=dict.fromkeys(range(30), 40))
    kfold = pl.train_kfold(x, noisy)
    classic = pl.calibrate_thresholds(kfold.oof, noisy)
    noise = open_set.estimate_label_noise(kfold.oof, noisy, 4)
    aware = open_set.calibrate_noise_aware(kfold.oof, noisy, noise)
    usable = np.isfinite(aware.tau)
    assert usable.sum() > np.isfinite(classic.tau).sum() + 10
    assert np.all(aware.tau[usable] >= 0.5) and set(aware.kind) <= {
        pl.TAU_CLASS,
        pl.TAU_UNREACHABLE,
    }
    assert np.nanmin(aware.observed_precision) < np.nanmin(aware.estimated_precision)


def test_absent_class_keeps_nothing_few_shot_class_is_kept_and_ood_is_rejected():
    x, y, _, centers, rng = _toy(support={29: 0, 28: 2})
    kfold = pl.train_kfold(x, y)
    rule, _ = open_set.fit_rule(x, y, kfold)
    model = rule.model
    assert model.thresholds.kind[29] == pl.TAU_ABSENT and model.thresholds.few_shot[28]
    assert model.thresholds.kind[28] == pl.TAU_FEW_SHOT and not model.thresholds.few_shot[0]
    cand = (centers[[28] * 20 + [29] * 20] + rng.standard_normal((40, 32))).astype(np.float32)
    far = (rng.standard_normal((20, 32)) * 2 + 12 * rng.standard_normal(32)).astype(np.float32)
    d = rule.score(np.concatenate([cand, far]))
    assert (d.label[d.kept] != 29).all()
    assert d.kept[:20].mean() > 0.5 and (d.label[:20][d.kept[:20]] == 28).all()
    assert d.few_shot[:20][d.kept[:20]].all()
    assert not d.kept[20:].any()  # class 29: OOD or low confidence, never kept
    assert (d.reason[40:] == pl.OUT_OF_DISTRIBUTION).all()  # far from every class
    assert (d.ood_score[40:] > model.ood.delta).all() and model.ood.id_loss <= 0.05
    # --no-ood: the same far candidates are no longer rejected as out_of_distribution.
    loose = open_set.OpenSetRule(rule.heads, model, pl.PseudolabelConfig(ood=False))
    assert not (loose.score(far).reason == pl.OUT_OF_DISTRIBUTION).any()


def test_few_shot_label_needs_every_fold_prototype_to_agree():
    x, y, _, _, _ = _toy(seed=4, support={27: 3, 28: 3})
    kfold = pl.train_kfold(x, y)
    rule, _ = open_set.fit_rule(x, y, kfold)
    protos = rule.model.prototypes
    # Along the segment between the two few-shot prototypes the nearest prototype
    # changes, and not at the same place in every fold's prototype set.
    t = np.linspace(0.3, 0.7, 81)[:, None]
    line = (t * protos.full[27] + (1 - t) * protos.full[28]).astype(np.float32)
    d = rule.score(line)
    nearest_full = (line @ protos.full.T).argmax(1)
    for i in np.flatnonzero(d.few_shot):
        label = d.label[i]
        assert label == nearest_full[i] and label in (27, 28)
        folds_agree = all(
            (line[i] @ protos.fold[k].T)[protos.fold_present[k]].max()
            == (line[i] @ protos.fold[k].T)[label]
            for k in range(4)
            if protos.fold_present[k, label]
        )
        # in distribution and no head objects: the fold prototypes decide
        if d.reason[i] not in (pl.OUT_OF_DISTRIBUTION, pl.FOLD_DISAGREEMENT):
            assert (d.reason[i] != pl.PROTOTYPE_DISAGREEMENT) == folds_agree
    assert (d.reason == pl.PROTOTYPE_DISAGREEMENT).sum() >= 3
    assert d.kept.any()  # away from the boundary the few-shot labels are kept


def test_open_set_rule_beats_the_classic_rule_on_noisy_labels_with_ood():
    rng = np.random.default_rng(1)
    centers, x, y = clusters(rng, 40)
    wrong = rng.random(len(y)) < 0.15
    y_noisy = np.where(wrong, (y + rng.integers(1, len(centers), len(y))) % len(centers), y)
    cand_y = rng.integers(0, len(centers), 600)
    in_dist = centers[cand_y] + 0.6 * rng.standard_normal((600, x.shape[1]))
    ood = rng.standard_normal((300, x.shape[1])) * 2
    cand = np.concatenate([in_dist, ood])
    truth = np.concatenate([cand_y, np.full(300, -1)])
    results = pseudolabel_eval.compare_rules(x, y_noisy, cand, truth)
    assert results["c"]["precision"] >= 0.95
    assert results["c"]["coverage"] > results["c_classic"]["coverage"] + 0.2

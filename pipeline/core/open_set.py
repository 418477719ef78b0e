"""The noise-aware, open-set keep rule for K-fold pseudo-labels (issue 16).

numpy in, numpy out; the K heads, the folds and the OOF probabilities come from
``pipeline.core.pseudolabel`` unchanged. Four pieces:

1. ``estimate_label_noise``: cleanlab's confident learning on the OOF
   probabilities (``count.compute_confident_joint`` → ``count.estimate_joint`` /
   ``count.estimate_latent``, ``filter.find_label_issues``): per class, the
   estimated share of wrong official labels, and a mask of labeled images whose
   label is likely wrong.
2. ``calibrate_noise_aware``: τ_c = the lowest confidence at which class c's
   OOF predictions reach the target precision *against the cleaned labels*
   (an OOF prediction that contradicts a label cleanlab flags is not counted as
   a model error). When every OOF prediction of the class meets the target, τ_c
   is the floor, not the lowest OOF confidence.
3. ``fit_prototypes`` / ``calibrate_ood``: open-set rejection. OOD score z =
   robust z-score of the cosine between a candidate and the prototype (mean
   L2-normalized embedding) of its class, against that class's held-out
   labeled images. The cut δ maximizes Youden's J between held-out labeled
   images and OOD proxies (feature-shuffled embeddings; pool candidates whose
   query class every head rejects); among near-maximal cuts the most permissive.
4. ``decide_open_set``: the keep rule; reasons out_of_distribution,
   fold_disagreement, prototype_disagreement, low_confidence, query_mismatch
   (defined once in ``pseudolabel``). Few-shot classes (fewer labeled images
   than K, or fewer OOF predictions than min_support) are labeled and scored by
   a nearest-prototype classifier, kept only when every fold's prototype set
   agrees and its calibrated probability clears the few-shot τ. A class with no
   labeled images has no head column and no prototype: it keeps nothing.

``fit_rule`` calibrates everything from the labeled set (and a sample of the
pool); ``OpenSetRule.score`` is what the Beam stage runs per batch: the batch is
normalized once and the K heads are one matrix product. Everything is
deterministic given ``PseudolabelConfig.seed``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import numpy as np

from pipeline.core import query_prior
from pipeline.core.classes import NUM_CLASSES
from pipeline.core.pseudolabel import (
    DEFAULT_CONFIG,
    FOLD_DISAGREEMENT,
    LOW_CONFIDENCE,
    OUT_OF_DISTRIBUTION,
    PROTOTYPE_DISAGREEMENT,
    QUERY_MISMATCH,
    TAU_ABSENT,
    TAU_CLASS,
    TAU_FEW_SHOT,
    TAU_UNREACHABLE,
    PseudolabelConfig,
    StackedHeads,
    l2_normalize,
    lowest_threshold,
)

#: The few-shot rule, as the report states it.
FEW_SHOT_RULE = (
    "A class with fewer labeled images than K (folds) or fewer than --min-support OOF "
    "predictions is few-shot. A candidate gets a few-shot label when its nearest class "
    "prototype (cosine to the mean normalized embedding) is that class; it is kept only "
    "if (1) the label is also nearest among every fold's prototypes that contain the class "
    "(else prototype_disagreement), (2) no head confidently (>= that class's τ) prefers a "
    "regular class (else fold_disagreement), (3) its OOD z-score is <= δ, and (4) the "
    "prototype classifier's probability softmax(-β·z) reaches the few-shot τ, calibrated "
    "at the target precision on held-out labeled images (else low_confidence). A class "
    "with no labeled image keeps nothing."
)

# ------------------------------------------------------------------ 1. label noise (cleanlab)


@dataclasses.dataclass
class LabelNoise:
    """cleanlab's view of the official labels.

    Attributes:
      issue: (n,) labeled images whose given label cleanlab flags as wrong.
      noise_rate: (C,) estimated P(true class ≠ c | given label c), from the
        calibrated confident joint (the number to report next to τ_c); NaN for
        classes cleanlab did not model.
      flagged_rate: (C,) share of class c's labeled images flagged.
      flip_rate: (C,) P(given ≠ c | true c), cleanlab's noise matrix.
      flip_in: (C,) mean over true classes j ≠ c of P(given c | true j).
      modeled: (C,) classes in the cleanlab problem (≥ K labeled images).
      joint: (m, m) estimated joint P(given, true) over the modeled classes.
    """

    issue: np.ndarray
    noise_rate: np.ndarray
    flagged_rate: np.ndarray
    flip_rate: np.ndarray
    flip_in: np.ndarray
    modeled: np.ndarray
    joint: np.ndarray


def estimate_label_noise(
    oof: np.ndarray,
    y: np.ndarray,
    min_count: int,
    num_classes: int = NUM_CLASSES,
    filter_by: str = "prune_by_noise_rate",
) -> LabelNoise:
    """Confident learning on out-of-fold probabilities.

    cleanlab wants labels 0..m-1 and a probability column for each. Our OOF
    matrix has NUM_CLASSES columns, zero for classes a head never saw, and a
    class with fewer than K images is missing from some heads (its images then
    get OOF probability 0 for their own class, which cleanlab would read as
    "surely mislabeled"). So the problem is restricted to classes with at least
    ``min_count`` (= K) labeled images: their rows and columns, rows
    renormalized, labels remapped. Other classes are never flagged; their rates
    are NaN.
    """
    from cleanlab.count import compute_confident_joint, estimate_joint, estimate_latent
    from cleanlab.filter import find_label_issues

    oof = np.asarray(oof, np.float64)
    y = np.asarray(y, np.int64)
    counts = np.bincount(y, minlength=num_classes)
    modeled = counts >= max(min_count, 2)
    classes = np.flatnonzero(modeled)
    issue = np.zeros(len(y), bool)
    nan = np.full(num_classes, np.nan)
    if len(classes) < 2:
        return LabelNoise(issue, nan, nan.copy(), nan.copy(), nan.copy(), modeled, np.zeros((0, 0)))
    rows = np.flatnonzero(modeled[y])
    remap = np.full(num_classes, -1)
    remap[classes] = np.arange(len(classes))
    labels = remap[y[rows]]
    probs = np.clip(oof[rows][:, classes], 1e-12, None)
    probs /= probs.sum(1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cj = compute_confident_joint(labels, probs, calibrate=True)
        joint = estimate_joint(labels, probs, confident_joint=cj)
        _, noise_matrix, _ = estimate_latent(cj, labels)  # P(given = i | true = j)
        mask = find_label_issues(labels, probs, confident_joint=cj, filter_by=filter_by, n_jobs=1)
    issue[rows] = mask
    m = len(classes)
    noise_rate, flagged_rate, flip_rate, flip_in = (nan.copy() for _ in range(4))
    noise_rate[classes] = 1 - np.diag(joint) / np.maximum(joint.sum(1), 1e-12)
    flagged_rate[classes] = np.bincount(labels, mask.astype(float), m) / np.maximum(
        np.bincount(labels, minlength=m), 1
    )
    flip_rate[classes] = 1 - np.diag(noise_matrix)
    flip_in[classes] = (noise_matrix.sum(1) - np.diag(noise_matrix)) / max(m - 1, 1)
    return LabelNoise(issue, noise_rate, flagged_rate, flip_rate, flip_in, modeled, joint)


# ------------------------------------------------------------------ 2. noise-aware thresholds


@dataclasses.dataclass
class NoiseAwareThresholds:
    """τ per class, how it was chosen, and what the report shows next to it.

    Attributes:
      tau: (C,) thresholds (inf: keeps nothing). Regular classes: on the mean
        max-probability of the heads; few-shot classes: on the prototype
        classifier's probability.
      kind: per class TAU_CLASS, TAU_FEW_SHOT, TAU_UNREACHABLE or TAU_ABSENT.
      support: (C,) OOF predictions of the class.
      few_shot: (C,) classes handled by the few-shot rule.
      pooled: τ calibrated on all classes together (heads' confidence).
      noise_rate: (C,) cleanlab's estimated label-noise rate of the class.
      observed_precision: (C,) OOF precision at τ_c against the given labels.
      estimated_precision: (C,) the same against the cleaned labels (what τ_c targets).
    """

    tau: np.ndarray
    kind: list[str]
    support: np.ndarray
    few_shot: np.ndarray
    pooled: float | None
    noise_rate: np.ndarray
    observed_precision: np.ndarray
    estimated_precision: np.ndarray


def calibrate_noise_aware(
    oof: np.ndarray,
    y: np.ndarray,
    noise: LabelNoise,
    config: PseudolabelConfig = DEFAULT_CONFIG,
    few_shot_oof: tuple[np.ndarray, np.ndarray] | None = None,
    num_classes: int = NUM_CLASSES,
) -> NoiseAwareThresholds:
    """Per-class τ_c from OOF predictions judged against cleanlab-cleaned labels.

    Few-shot classes get one τ on the prototype classifier's probability,
    calibrated the same way on that classifier's held-out predictions
    (``few_shot_oof`` = (max probability, cleaned-correct)); without it, the
    heads' pooled τ (the old fallback).
    """
    oof = np.asarray(oof, np.float32)
    y = np.asarray(y, np.int64)
    predicted, confidence = oof.argmax(1), oof.max(1)
    observed = predicted == y
    issue = np.asarray(noise.issue, bool)
    transforms: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
    if config.noise_method == "credit":
        correct, weight = (observed | issue).astype(float), np.ones(len(y))
    elif config.noise_method == "exclude":
        correct, weight = (observed & ~issue).astype(float), (~issue).astype(float)
    elif config.noise_method == "rate":
        correct, weight = observed.astype(float), np.ones(len(y))
        for c in np.flatnonzero(np.isfinite(noise.flip_rate)):
            rho, nu = float(noise.flip_rate[c]), float(noise.flip_in[c])
            transforms[c] = lambda p, rho=rho, nu=nu: (p - nu) / max(1 - rho - nu, 1e-6)
    else:
        raise ValueError(f"unknown noise_method {config.noise_method!r}")
    target, support_min, floor = config.target_precision, config.min_support, config.threshold_floor
    counts = np.bincount(y, minlength=num_classes)
    support = np.bincount(predicted, minlength=num_classes)
    few_shot = (counts > 0) & ((counts < config.folds) | (support < support_min))
    pooled = lowest_threshold(confidence, correct, target, support_min, floor, weight)
    few_tau = pooled
    if few_shot_oof is not None and len(few_shot_oof[0]):
        few_tau = lowest_threshold(few_shot_oof[0], few_shot_oof[1], target, support_min, floor)
    tau = np.full(num_classes, np.inf)
    kind: list[str] = []
    obs_p = np.full(num_classes, np.nan)
    est_p = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mine = predicted == c
        if counts[c] == 0:
            kind.append(TAU_ABSENT)
            continue
        if few_shot[c]:
            t, source = few_tau, TAU_FEW_SHOT
        else:
            t = lowest_threshold(
                confidence[mine],
                correct[mine],
                target,
                support_min,
                floor,
                weight[mine],
                transforms.get(c),
            )
            source = TAU_CLASS
        if t is None:
            kind.append(TAU_UNREACHABLE)
            continue
        tau[c] = max(t, floor)
        kind.append(source)
        above = mine & (confidence >= tau[c])
        if source == TAU_CLASS and above.any():
            obs_p[c] = observed[above].mean()
            p = correct[above].sum() / max(weight[above].sum(), 1e-12)
            est_p[c] = transforms[c](np.array([p]))[0] if c in transforms else p
    return NoiseAwareThresholds(
        tau, kind, support, few_shot, pooled, noise.noise_rate, obs_p, est_p
    )


# ------------------------------------------------------------------ 3. prototypes, OOD


@dataclasses.dataclass
class Prototypes:
    """Class means of L2-normalized labeled embeddings, overall and per fold.

    Attributes:
      full: (C, d) unit class means over all labeled images (zero rows: absent).
      fold: (K, C, d) unit class means over the images head k trained on.
      present: (C,) has labeled images; fold_present: (K, C).
      center, scale: (C,) median and 1.4826·MAD of the cosine between a
        held-out image of the class and the class's prototype from the other
        folds. Classes with fewer than ``max(K, 8)`` images take them from
        ``size_null`` (prototypes of the same size drawn from bigger classes).
    """

    full: np.ndarray
    fold: np.ndarray
    present: np.ndarray
    fold_present: np.ndarray
    center: np.ndarray
    scale: np.ndarray

    def z(self, u: np.ndarray, which: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """(n, C) standardized distance of unit rows ``u`` to every class (inf: absent).

        ``which`` = (a (C, d) prototype set, its (C,) presence), default ``full``.
        """
        protos, present = (self.full, self.present) if which is None else which
        return self.z_from_cos(u @ protos.T, present)

    def z_from_cos(self, cos: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """(n, C) z from cosines to a prototype set (default presence: ``present``)."""
        present = self.present if present is None else present
        with np.errstate(invalid="ignore"):
            z = (self.center[None, :] - cos) / self.scale[None, :]
        return np.where(present[None, :], z, np.inf).astype(np.float32)


def _class_means(u: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    sums = np.zeros((num_classes, u.shape[1]), np.float64)
    np.add.at(sums, y, u)
    return l2_normalize(sums), np.bincount(y, minlength=num_classes) > 0


def _robust(v: np.ndarray) -> tuple[float, float]:
    med = float(np.median(v))
    return med, float(1.4826 * np.median(np.abs(v - med)))


def size_null(
    u: np.ndarray,
    y: np.ndarray,
    donors: np.ndarray,
    size: int,
    draws: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """How a prototype of ``size`` images shifts and spreads its members' cosines.

    For each donor class, ``draws`` random subsets of ``size`` images make a
    prototype; the other images' cosines to it, relative to their cosines to the
    donor's full prototype, are pooled. Returns (median shift, 1.4826·MAD
    spread). A class with ``size`` labeled images then uses center = typical
    center + shift, scale = spread: one-image prototypes sit lower and wider,
    and the OOD test knows it.
    """
    shifts, devs = [], []
    for c in np.flatnonzero(donors):
        idx = np.flatnonzero(y == c)
        ref = np.median(u[idx] @ l2_normalize(u[idx].mean(0, keepdims=True))[0])
        for _ in range(draws):
            pick = rng.choice(idx, size, replace=False)
            rest = np.setdiff1d(idx, pick)
            cos = u[rest] @ l2_normalize(u[pick].mean(0, keepdims=True))[0]
            shifts.append(np.median(cos) - ref)
            devs.append(cos - np.median(cos))
    devs_all = np.concatenate(devs)
    return float(np.median(shifts)), float(1.4826 * np.median(np.abs(devs_all)))


def fit_prototypes(
    x: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    issue: np.ndarray | None = None,
    config: PseudolabelConfig = DEFAULT_CONFIG,
    num_classes: int = NUM_CLASSES,
) -> Prototypes:
    """Full and per-fold prototypes and each class's held-out cosine statistics.

    Images cleanlab flags are left out of the prototypes of classes with enough
    images for their own statistics (a mislabeled image pulls a mean toward
    another class); smaller classes keep every image they have.
    """
    u = l2_normalize(x)
    y = np.asarray(y, np.int64)
    fold = np.asarray(fold, np.int64)
    counts = np.bincount(y, minlength=num_classes)
    big = counts >= max(config.folds, 8)
    use = np.ones(len(y), bool) if issue is None else ~(np.asarray(issue, bool) & big[y])
    full, present = _class_means(u[use], y[use], num_classes)
    n_folds = int(fold.max()) + 1
    fold_protos = np.zeros((n_folds, num_classes, u.shape[1]), np.float32)
    fold_present = np.zeros((n_folds, num_classes), bool)
    held_cos = np.full(len(y), np.nan, np.float32)
    for k in range(n_folds):
        train = use & (fold != k)
        fold_protos[k], fold_present[k] = _class_means(u[train], y[train], num_classes)
        held = use & (fold == k) & fold_present[k][y]
        held_cos[held] = np.einsum("nd,nd->n", u[held], fold_protos[k][y[held]])
    center = np.full(num_classes, np.nan, np.float32)
    scale = np.full(num_classes, np.nan, np.float32)
    for c in np.flatnonzero(big):
        center[c], scale[c] = _robust(held_cos[(y == c) & ~np.isnan(held_cos)])
    typical_center = float(np.nanmedian(center)) if big.any() else 0.5
    typical_scale = float(np.nanmedian(scale)) if big.any() else 0.1
    rng = np.random.default_rng(config.seed)
    for c in np.flatnonzero(present & ~big):
        donors = big & (counts > counts[c] + 1)
        if donors.any():
            shift, spread = size_null(u, y, donors, int(counts[c]), draws=10, rng=rng)
            center[c], scale[c] = typical_center + shift, spread
        else:
            center[c], scale[c] = typical_center, typical_scale
    return Prototypes(
        full.astype(np.float32),
        fold_protos,
        present,
        fold_present,
        center,
        np.maximum(scale, 1e-4),
    )


def ood_scores(x: np.ndarray, label: np.ndarray, protos: Prototypes) -> np.ndarray:
    """(n,) OOD score of each row for its label: z = (center − cos) / scale; +inf if absent."""
    z = protos.z(l2_normalize(x))
    return z[np.arange(len(z)), np.asarray(label, np.int64)]


def held_out_scores(
    x: np.ndarray,
    y: np.ndarray,
    oof: np.ndarray,
    fold: np.ndarray,
    protos: Prototypes,
    issue: np.ndarray,
) -> np.ndarray:
    """OOD scores of clean, correctly OOF-predicted labeled images, out of fold.

    Each image's cosine to its class prototype built without its fold,
    standardized with the class statistics: the in-distribution reference.
    """
    u = l2_normalize(x)
    y = np.asarray(y, np.int64)
    ok = (np.asarray(oof).argmax(1) == y) & ~np.asarray(issue, bool)
    ok &= protos.fold_present[fold, y]
    idx = np.flatnonzero(ok)
    cos = np.einsum("nd,nd->n", u[idx], protos.fold[fold[idx], y[idx]])
    return ((protos.center[y[idx]] - cos) / protos.scale[y[idx]]).astype(np.float32)


def prototype_probs(z: np.ndarray, beta: float) -> np.ndarray:
    """(n, C) prototype-classifier probabilities: softmax of −β·z over present classes.

    z is the standardized distance (``Prototypes.z``), so a one-image prototype,
    whose members sit at a lower cosine, competes fairly with a 60-image one.
    """
    logits = -beta * z
    logits -= np.max(np.where(np.isfinite(logits), logits, -np.inf), 1, keepdims=True)
    p = np.where(np.isfinite(z), np.exp(logits), 0.0)
    return (p / np.maximum(p.sum(1, keepdims=True), 1e-30)).astype(np.float32)


def fit_prototype_classifier(
    x: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    protos: Prototypes,
    issue: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray]:
    """β and the out-of-fold (max probability, cleaned-correct) of the prototype classifier.

    Held-out images of every class with images in other folds are classified
    with the fold prototypes built without them; β (grid) minimizes their log
    loss on the given labels, flagged images left out. Their confidences and
    correctness (a flagged label counts as the classifier being right, as in
    the heads' calibration) calibrate the few-shot threshold.
    """
    u = l2_normalize(x)
    y = np.asarray(y, np.int64)
    flagged = np.asarray(issue, bool)
    use = protos.fold_present[fold, y]
    z = np.full((len(y), len(protos.present)), np.inf, np.float32)
    for k in range(protos.fold.shape[0]):
        m = use & (fold == k)
        z[m] = protos.z(u[m], (protos.fold[k], protos.fold_present[k]))
    fit = use & ~flagged
    betas = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
    losses = [
        -np.mean(
            np.log(np.maximum(prototype_probs(z[fit], b)[np.arange(fit.sum()), y[fit]], 1e-12))
        )
        for b in betas
    ]
    beta = betas[int(np.argmin(losses))]
    p = prototype_probs(z[use], beta)
    correct = (p.argmax(1) == y[use]) | flagged[use]
    return float(beta), p.max(1), correct


def synthetic_proxies(
    x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """OOD proxies made from the labeled embeddings alone.

    shuffled: every feature permuted independently across the labeled set (the
      marginals of real embeddings, none of their joint structure);
    mixup: λ·u_i + (1−λ)·u_j of two images of different classes, λ ~ U(0.3, 0.7)
      (reported only by default: ambiguous scenes are the heads' job, and using
      them for the cut rejects the tail of every class).
    """
    u = l2_normalize(x)
    y = np.asarray(y)
    i, j = rng.integers(0, len(y), 4 * n), rng.integers(0, len(y), 4 * n)
    keep = np.flatnonzero(y[i] != y[j])[:n]
    lam = rng.uniform(0.3, 0.7, (len(keep), 1)).astype(np.float32)
    mix = lam * u[i[keep]] + (1 - lam) * u[j[keep]]
    shuffled = u[rng.integers(0, len(y), (n, u.shape[1])), np.arange(u.shape[1])]
    return {"shuffled": shuffled.astype(np.float32), "mixup": mix.astype(np.float32)}


def pool_proxies(head_probs: np.ndarray, query: np.ndarray, max_prob: float) -> np.ndarray:
    """Pool candidates every head says are not their query class (p_query < max_prob).

    A mixture of real OOD images and in-distribution off-class ones; Youden's J
    tolerates that (see ``calibrate_ood``).
    """
    query = np.asarray(query, np.int64)
    p_query = head_probs[:, np.arange(len(query)), np.maximum(query, 0)]
    return (query >= 0) & (p_query < max_prob).all(0)


@dataclasses.dataclass
class OODCalibration:
    """The OOD cut and what it costs.

    Attributes:
      delta: reject when the OOD score exceeds it.
      id_loss: share of held-out labeled images rejected at δ.
      proxy_rejected: {proxy kind: share rejected at δ} (also kinds not used for the cut).
      youden: best J found.
    """

    delta: float
    id_loss: float
    proxy_rejected: dict[str, float]
    youden: float


def calibrate_ood(
    id_scores: np.ndarray,
    proxy_scores: dict[str, np.ndarray],
    max_id_loss: float = 0.05,
    tolerance: float = 0.01,
    pick: str = "permissive",
) -> OODCalibration:
    """δ from J(δ) = mean over proxy kinds of R_kind(δ) − R_id(δ), R = share with score > δ.

    Cuts rejecting more than ``max_id_loss`` of held-out labeled images are not
    allowed. Among the cuts whose J is within ``tolerance`` of the best (the
    contiguous range around it), "permissive" takes the largest — the least
    in-distribution loss at (almost) the best separation — and "middle" the
    middle. A proxy set that is a mixture (1−π)·OOD + π·ID has
    R = (1−π)·R_OOD + π·R_id, so J is only scaled by (1−π): its best cut does
    not move, and contaminated pool proxies can be used as they are. With no
    proxies, δ = the largest held-out score (rejects only what is beyond
    anything labeled).
    """
    ids = np.sort(np.asarray(id_scores, np.float64))
    kinds = {k: np.sort(np.asarray(v, np.float64)) for k, v in proxy_scores.items() if len(v)}

    def rejected(sorted_v: np.ndarray, d: np.ndarray) -> np.ndarray:
        return 1 - np.searchsorted(sorted_v, d, side="right") / max(len(sorted_v), 1)

    if not kinds or not len(ids):
        delta = float(ids[-1]) if len(ids) else np.inf
        return OODCalibration(delta, 0.0, {}, 0.0)
    values = np.concatenate([ids, *kinds.values()])
    values = np.unique(values[np.isfinite(values)])
    cuts = np.r_[values[0] - 1, (values[1:] + values[:-1]) / 2, values[-1] + 1]
    r_id = rejected(ids, cuts)
    j = np.mean([rejected(v, cuts) for v in kinds.values()], axis=0) - r_id
    j[r_id > max_id_loss] = -np.inf
    best = int(np.argmax(j))
    good = j >= j[best] - tolerance
    lo = hi = best
    while lo > 0 and good[lo - 1]:
        lo -= 1
    while hi < len(cuts) - 1 and good[hi + 1]:
        hi += 1
    delta = float(cuts[hi]) if pick == "permissive" else float((cuts[lo] + cuts[hi]) / 2)
    d = np.array([delta])
    return OODCalibration(
        delta=delta,
        id_loss=float(rejected(ids, d)[0]),
        proxy_rejected={k: float(rejected(v, d)[0]) for k, v in kinds.items()},
        youden=float(j[best]),
    )


# ------------------------------------------------------------------ 4. the keep rule


@dataclasses.dataclass
class OpenSetModel:
    """Everything the keep rule needs besides the heads' probabilities.

    Attributes:
      thresholds: τ per class (noise-aware; few-shot τ on the prototype scale).
      prototypes: full and per-fold prototypes with their statistics.
      ood: the OOD cut.
      head_has: (K, C) class c was in head k's training set.
      proto_beta: the prototype classifier's β.
      few_shot_oof: its held-out (max probability, cleaned-correct), to recalibrate
        the few-shot τ for another target or floor.
      query: τ^Q for candidates labeled as their crawl query (``query_prior``), or
        None (no pool given, or turned off).
    """

    thresholds: NoiseAwareThresholds
    prototypes: Prototypes
    ood: OODCalibration
    head_has: np.ndarray
    proto_beta: float
    few_shot_oof: tuple[np.ndarray, np.ndarray]
    query: query_prior.QueryEvidence | None = None


@dataclasses.dataclass
class OpenSetDecisions:
    """Per candidate: label, confidence, OOD score, each rule's verdict, first failed rule.

    Attributes:
      label: (n,) class (the soft label's argmax, or the nearest few-shot prototype).
      confidence: (n,) mean probability of the label over the heads that saw it;
        for few-shot labels the prototype classifier's probability.
      soft_label: (n, C) mean of the K heads (the distillation target, unchanged).
      head_labels: (n, K) each head's argmax.
      ood_score: (n,) z for the label's class.
      few_shot: (n,) the label is a few-shot class (confidence from the prototypes).
      in_distribution, agree, prototype_agree, confident, query_ok: (n,) verdicts.
      reason: (n,) first failed rule, or None when kept.
    """

    label: np.ndarray
    confidence: np.ndarray
    soft_label: np.ndarray
    head_labels: np.ndarray
    ood_score: np.ndarray
    few_shot: np.ndarray
    in_distribution: np.ndarray
    agree: np.ndarray
    prototype_agree: np.ndarray
    confident: np.ndarray
    query_ok: np.ndarray
    reason: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        return np.array([r is None for r in self.reason], bool)


def split_tau(
    model: OpenSetModel, tau: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(τ, τ^Q or None): the model's own, or a curve point's (C,) or (2, C) override."""
    if tau is None:
        return model.thresholds.tau, (model.query.tau if model.query is not None else None)
    tau = np.asarray(tau, np.float64)
    return (tau[0], tau[1]) if tau.ndim == 2 else (tau, None)


def decide_open_set(
    x: np.ndarray,
    head_probs: np.ndarray,
    model: OpenSetModel,
    query_class: np.ndarray | None = None,
    config: PseudolabelConfig = DEFAULT_CONFIG,
    tau: np.ndarray | None = None,
    normalized: bool = False,
) -> OpenSetDecisions:
    """The keep rule on embeddings ``x`` (n, d) and head probabilities (K, n, C).

    Label: the soft label's argmax, unless the nearest prototype (largest
    cosine) is a few-shot class, which the heads barely know: then that class.
    (Raw cosine, not z, picks the nearest: class means of big classes sit
    closer to everything, so this errs toward the heads' label.)
    Checks, in order; a candidate records the first failure:
      out_of_distribution: z of the label's class > δ (a class without labeled
        images has no prototype: always);
      fold_disagreement: a head that saw the class gives another one; for a
        few-shot label, the heads instead confidently (≥ that class's τ) prefer
        a regular class;
      prototype_disagreement (few-shot labels): the nearest prototype (cosine) is
        another class in the full set or in a fold's set that contains the label;
      low_confidence: confidence < τ of the label's class (τ^Q instead, when lower,
        for a candidate labeled as its crawl query: ``query_prior``);
      query_mismatch: optional.
    ``tau`` overrides the calibrated thresholds (curves): (C,) τ, or (2, C) τ and
    τ^Q; ``normalized``: ``x`` is already L2-normalized (the stage normalizes a
    batch once).
    """
    tau, query_tau = split_tau(model, tau)
    head_probs = np.asarray(head_probs, np.float32)
    n = head_probs.shape[1]
    protos = model.prototypes
    few_shot = model.thresholds.few_shot
    u = np.asarray(x, np.float32) if normalized else l2_normalize(x)
    soft = head_probs.mean(0)
    head_label = soft.argmax(1) if n else np.zeros(0, np.int64)
    cos = u @ protos.full.T
    z_all = protos.z_from_cos(cos)  # (center − cos) / scale per class
    nearest = np.where(protos.present[None, :], cos, -np.inf).argmax(1)
    label = np.where(few_shot[nearest], nearest, head_label)
    few = few_shot[label]
    rows = np.arange(n)
    head_labels = head_probs.argmax(2).T
    has = model.head_has[:, label].T  # (n, K): head k saw the label's class
    p_label = head_probs[:, rows, label].T
    confidence = (p_label * has).sum(1) / np.maximum(has.sum(1), 1)
    if few.any():
        confidence[few] = prototype_probs(z_all[few], model.proto_beta)[
            np.arange(few.sum()), label[few]
        ]
    agree = ((head_labels == label[:, None]) | ~has).all(1)
    head_tau = tau[head_label] if n else np.zeros(0)
    objection = (
        (head_label != label)
        & ~few_shot[head_label]
        & (soft.max(1) >= np.where(np.isfinite(head_tau), head_tau, np.inf))
    )
    agree = np.where(few, ~objection, agree)
    score = z_all[rows, label]
    in_dist = protos.present[label] & ((score <= model.ood.delta) | (not config.ood))
    proto_agree = np.ones(n, bool)
    if few.any():
        idx = np.flatnonzero(few)
        lab = label[idx]
        ok = nearest[idx] == lab
        for k in range(protos.fold.shape[0]):
            present = protos.fold_present[k]
            cos_k = np.where(present[None, :], u[idx] @ protos.fold[k].T, -np.inf)
            ok &= (cos_k.argmax(1) == lab) | ~present[lab]
        proto_agree[idx] = ok
    confident = confidence >= query_prior.effective_tau(label, query_class, tau, query_tau)
    if query_class is None:
        query_ok = np.ones(n, bool)
    else:
        q = np.asarray(query_class, np.int64)
        query_ok = (q < 0) | (q == label)
    reason = np.full(n, None, object)
    open_ = np.ones(n, bool)
    for enabled, passed, why in (
        (True, in_dist, OUT_OF_DISTRIBUTION),
        (config.require_agreement, agree, FOLD_DISAGREEMENT),
        (True, proto_agree, PROTOTYPE_DISAGREEMENT),
        (True, confident, LOW_CONFIDENCE),
        (config.require_query_match, query_ok, QUERY_MISMATCH),
    ):
        if enabled:
            fail = open_ & ~passed
            reason[fail] = why
            open_ &= ~fail
    return OpenSetDecisions(
        label,
        confidence,
        soft,
        head_labels,
        score,
        few,
        in_dist,
        agree,
        proto_agree,
        confident,
        query_ok,
        reason,
    )


def fit_open_set(
    x: np.ndarray,
    y: np.ndarray,
    oof: np.ndarray,
    fold: np.ndarray,
    heads_probs: Callable[[np.ndarray], np.ndarray],
    head_classes: list[np.ndarray],
    pool_head_probs: np.ndarray | None = None,
    pool_query: np.ndarray | None = None,
    pool_x: np.ndarray | None = None,
    config: PseudolabelConfig = DEFAULT_CONFIG,
    num_classes: int = NUM_CLASSES,
) -> tuple[OpenSetModel, LabelNoise, dict[str, np.ndarray]]:
    """Calibrates the rule from the labeled set (+ the pool's proxies, if given).

    ``heads_probs(x) -> (K, n, C)`` labels the synthetic proxies. The pool
    arguments (head probabilities, query classes, embeddings of dedup-kept
    candidates, or a sample of them) supply the "query strongly rejected"
    proxies (used when there are at least 20). Returns the model, cleanlab's
    estimate and the scores the cut saw.
    """
    y = np.asarray(y, np.int64)
    noise = estimate_label_noise(oof, y, config.folds, num_classes, config.cleanlab_filter)
    protos = fit_prototypes(x, y, fold, noise.issue, config, num_classes)
    beta, p_conf, p_correct = fit_prototype_classifier(x, y, fold, protos, noise.issue)
    thresholds = calibrate_noise_aware(oof, y, noise, config, (p_conf, p_correct), num_classes)
    id_scores = held_out_scores(x, y, oof, fold, protos, noise.issue)
    rng = np.random.default_rng(config.seed)
    cut: dict[str, np.ndarray] = {}
    reported: dict[str, np.ndarray] = {}
    for kind, px in synthetic_proxies(x, y, config.proxies, rng).items():
        s = ood_scores(px, heads_probs(px).mean(0).argmax(1), protos)
        (cut if kind in config.cut_proxies else reported)[kind] = s
    if pool_head_probs is not None and pool_query is not None and pool_x is not None:
        mask = pool_proxies(pool_head_probs, pool_query, config.proxy_query_prob)
        if mask.sum() >= 20:
            labels = pool_head_probs[:, mask].mean(0).argmax(1)
            cut["pool"] = ood_scores(pool_x[mask], labels, protos)
        else:
            reported["pool (fewer than 20: not used)"] = (
                ood_scores(pool_x[mask], pool_head_probs[:, mask].mean(0).argmax(1), protos)
                if mask.any()
                else np.zeros(0, np.float32)
            )
    ood = calibrate_ood(id_scores, cut, config.max_id_loss, config.ood_tolerance, config.ood_pick)
    for kind, s in reported.items():
        if len(s):
            name = kind if "not used" in kind else f"{kind} (not used)"
            ood.proxy_rejected[name] = float(np.mean(s > ood.delta))
    head_has = np.zeros((len(head_classes), num_classes), bool)
    for k, classes in enumerate(head_classes):
        head_has[k, classes] = True
    query = None
    if config.query_prior and pool_head_probs is not None and pool_query is not None:
        query = query_evidence(oof, y, noise, thresholds, pool_head_probs, pool_query, config)
    model = OpenSetModel(thresholds, protos, ood, head_has, beta, (p_conf, p_correct), query)
    return model, noise, {"id": id_scores, **cut, **reported}


def query_evidence(
    oof: np.ndarray,
    y: np.ndarray,
    noise: LabelNoise,
    thresholds: NoiseAwareThresholds,
    pool_head_probs: np.ndarray,
    pool_query: np.ndarray,
    config: PseudolabelConfig = DEFAULT_CONFIG,
) -> query_prior.QueryEvidence:
    """τ^Q for the regular classes, from the pool sample's head labels and queries."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=len(thresholds.tau))
    return query_prior.query_thresholds(
        oof,
        y,
        np.asarray(pool_head_probs).mean(0).argmax(1),
        pool_query,
        (counts > 0) & ~thresholds.few_shot,
        config.target_precision,
        config.threshold_floor,
        config.query_prior_strength,
        noise.issue,
    )


@dataclasses.dataclass
class OpenSetRule:
    """What a scoring worker needs: the stacked heads, the calibrated model, the knobs.

    Attributes:
      heads: the K heads as one matrix product.
      model: thresholds, prototypes, δ.
      config: the rule's switches (agreement, query match, OOD).
    """

    heads: StackedHeads
    model: OpenSetModel
    config: PseudolabelConfig = DEFAULT_CONFIG

    def score(self, x: np.ndarray, query_class: np.ndarray | None = None) -> OpenSetDecisions:
        """Decisions for raw embeddings ``x``: normalized once, all heads in one product."""
        u = l2_normalize(x)
        probs = self.heads.predict_proba_unit(u)
        return decide_open_set(u, probs, self.model, query_class, self.config, normalized=True)


def sample_pool(n: int, size: int, seed: int = 2021) -> np.ndarray:
    """Sorted indices of at most ``size`` of ``n`` pool rows (deterministic)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def fit_rule(
    x: np.ndarray,
    y: np.ndarray,
    kfold,
    pool_x: np.ndarray | None = None,
    pool_query: np.ndarray | None = None,
    config: PseudolabelConfig = DEFAULT_CONFIG,
) -> tuple[OpenSetRule, LabelNoise]:
    """The rule from K-fold heads (``pseudolabel.KFoldHeads``) and a pool sample.

    ``pool_x``/``pool_query``: dedup-kept candidates (at most ``config.pool_sample``
    are scored, chosen by ``sample_pool``); their "query strongly rejected" rows
    are OOD proxies for δ.
    """
    heads = kfold.stacked()
    pool_probs = None
    if pool_x is not None and pool_query is not None and len(pool_x):
        pick = sample_pool(len(pool_x), config.pool_sample, config.seed)
        pool_x = np.asarray(pool_x, np.float32)[pick]
        pool_query = np.asarray(pool_query, np.int64)[pick]
        pool_probs = heads.predict_proba(pool_x)
    model, noise, _ = fit_open_set(
        x,
        y,
        kfold.oof,
        kfold.fold,
        heads.predict_proba,
        heads.classes,
        pool_probs,
        pool_query,
        pool_x,
        config,
    )
    return OpenSetRule(heads, model, config), noise


def held_out_z(
    x: np.ndarray, label: np.ndarray, fold: np.ndarray, protos: Prototypes
) -> np.ndarray:
    """(n,) each labeled image's z for ``label`` against the prototypes without its fold."""
    u = l2_normalize(x)
    label = np.asarray(label, np.int64)
    out = np.full(len(u), np.inf, np.float32)
    for k in range(protos.fold.shape[0]):
        m = np.flatnonzero(np.asarray(fold) == k)
        if len(m):
            z = protos.z(u[m], (protos.fold[k], protos.fold_present[k]))
            out[m] = z[np.arange(len(m)), label[m]]
    return out


def tau_path(
    oof: np.ndarray,
    y: np.ndarray,
    noise: LabelNoise,
    model: OpenSetModel,
    config: PseudolabelConfig = DEFAULT_CONFIG,
    targets: np.ndarray | None = None,
    floors: np.ndarray | None = None,
) -> list[np.ndarray]:
    """(2, C) arrays (τ, τ^Q) along the rule's two knobs: the curve of rule (c).

    First the target precision from 0.30 to 0.99 with no floor, then the floor from
    0 to 1 at the configured target (the default point lies on it). The floor leg
    is needed: OOF predictions cannot show OOD errors, so the target alone cannot
    raise a τ whose cleaned OOF precision is already 1.
    """
    targets = np.r_[np.linspace(0.30, 0.99, 70), 0.995, 1.0] if targets is None else targets
    floors = (
        np.r_[np.linspace(0.0, 0.95, 96), np.linspace(0.951, 1.0, 50)] if floors is None else floors
    )
    no_floor = dataclasses.replace(config, threshold_floor=0.0)

    def tau_at(target: float) -> np.ndarray:
        cfg = dataclasses.replace(no_floor, target_precision=float(target))
        tau = calibrate_noise_aware(oof, y, noise, cfg, model.few_shot_oof).tau
        if model.query is None:
            return np.stack([tau, np.full_like(tau, np.inf)])
        prior = model.query.prior
        return np.stack([tau, query_prior.thresholds_at(oof, y, prior, target, 0.0, noise.issue)])

    path = [tau_at(t) for t in targets]
    base = tau_at(config.target_precision)
    path += [np.maximum(base, f) for f in floors]
    return path

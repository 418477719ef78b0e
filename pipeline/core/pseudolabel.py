"""K-fold self-distillation: out-of-fold confidence, calibrated thresholds, the keep rule.

numpy in, numpy out (cleanlab's style); the Beam stage (``pseudolabel_stage``) only
wires these functions. Labels are class indices 0..NUM_CLASSES-1; probabilities are
``(n, NUM_CLASSES)`` arrays, with zeros for classes a head never saw.

The method (ALONG's 4-fold self-distillation, Mobile AI 2021):

1. split the labeled train set into K stratified folds; head k is trained on the
   embeddings of the other K−1 folds, so every labeled image gets an
   *out-of-fold* (OOF) probability vector from the one head that never saw it;
2. per class c, the threshold τ_c is the lowest confidence at which the OOF
   predictions of class c reach the target precision (default 0.98), never below a
   floor; classes with too few OOF predictions to measure that use the threshold
   calibrated on all classes pooled;
3. a candidate gets K probability vectors; their mean is its soft label; it is kept
   when all K heads agree on the class, the mean max-probability is ≥ τ_c and
   (optionally) the class is the one the crawler searched for; each class adds at
   most ``max_per_class`` images, the most confident first.

Steps 2 and 3 here are the *classic* rule (``calibrate_thresholds``, ``decide``), kept as
the named baseline of the benchmarks. The stage runs ``open_set``: τ_c against
cleanlab-cleaned labels, an out-of-distribution test on class prototypes and a
few-shot prototype rule. The drop reasons and every knob of both are defined here.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from pipeline.core.classes import NUM_CLASSES

#: Drop reasons, in the order they are checked (a candidate records the first).
NOT_EMBEDDED = "not_embedded"
OUT_OF_DISTRIBUTION = "out_of_distribution"  # far from its class's prototype (open_set)
FOLD_DISAGREEMENT = "fold_disagreement"
PROTOTYPE_DISAGREEMENT = "prototype_disagreement"  # few-shot label not nearest in every fold
LOW_CONFIDENCE = "low_confidence"
QUERY_MISMATCH = "query_mismatch"
OVER_CLASS_CAP = "over_class_cap"
REASONS = (
    NOT_EMBEDDED,
    OUT_OF_DISTRIBUTION,
    FOLD_DISAGREEMENT,
    PROTOTYPE_DISAGREEMENT,
    LOW_CONFIDENCE,
    QUERY_MISMATCH,
    OVER_CLASS_CAP,
)

#: How a class's threshold was chosen.
TAU_CLASS = "class"  # from its own OOF predictions
TAU_POOLED = "pooled"  # too few OOF predictions: the pooled threshold (the classic rule)
TAU_FEW_SHOT = "few_shot"  # fewer images than K or OOF predictions: the prototype rule
TAU_UNREACHABLE = "unreachable"  # no threshold reaches the target: keeps nothing
TAU_ABSENT = "absent"  # no labeled image: keeps nothing


@dataclasses.dataclass(frozen=True)
class PseudolabelConfig:
    """Every knob of the keep rule; the defaults are the documented ones.

    Attributes:
      folds: K, the number of stratified folds and heads.
      target_precision: OOF precision each class's threshold must reach.
      threshold_floor: no threshold goes below this mean max-probability.
      min_support: OOF predictions a class needs to calibrate its own threshold.
      require_agreement: keep only candidates all K heads give the same class.
      require_query_match: keep only candidates labeled as the class searched for.
      max_per_class: most pseudo-labeled images one class may add (0: no cap).
      regularization: inverse L2 strength C of the logistic-regression heads.
      seed: fold assignment seed (reruns give the same folds).

    The open-set rule (``open_set``) adds:
      ood: apply the out-of-distribution test (prototype z-score > δ).
      max_id_loss: the OOD cut never rejects more than this share of held-out labeled images.
      ood_tolerance: cuts whose Youden J is within this of the best count as equally good.
      ood_pick: "permissive" (the largest such cut) or "middle" (the middle of the range).
      proxy_query_prob: a dedup-kept candidate is an OOD proxy when every head gives its
        query class less than this.
      pool_sample: most dedup-kept candidates scored for those proxies before δ is fixed.
      proxies: synthetic proxies made of each kind.
      cut_proxies: synthetic proxy kinds the cut is calibrated on (others only reported).
      noise_method: how labels cleanlab flags count in τ_c's precision: "credit" (the OOF
        prediction that contradicts a flagged label is right), "exclude" (left out),
        "rate" (given-label precision corrected with cleanlab's noise matrix).
      cleanlab_filter: ``filter_by`` of ``cleanlab.filter.find_label_issues``.
      query_prior: candidates the heads label as their crawl query meet τ^Q instead
        of τ_c when lower (``query_prior``: the query as a second view).
      query_prior_strength: pseudo-candidates shrinking each query's π toward the pool's.
    """

    folds: int = 4
    target_precision: float = 0.98
    threshold_floor: float = 0.5
    min_support: int = 5
    require_agreement: bool = True
    require_query_match: bool = False
    max_per_class: int = 1000
    regularization: float = 10.0
    seed: int = 2021
    ood: bool = True
    max_id_loss: float = 0.05
    ood_tolerance: float = 0.01
    ood_pick: str = "permissive"
    proxy_query_prob: float = 0.01
    pool_sample: int = 10_000
    proxies: int = 1000
    cut_proxies: tuple[str, ...] = ("shuffled",)
    noise_method: str = "credit"
    cleanlab_filter: str = "prune_by_noise_rate"
    query_prior: bool = True
    query_prior_strength: float = 10.0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, not {self.folds}")
        if not 0 < self.target_precision <= 1:
            raise ValueError(f"target precision must be in (0, 1], not {self.target_precision}")
        if not 0 <= self.threshold_floor <= 1:
            raise ValueError(f"threshold floor must be in [0, 1], not {self.threshold_floor}")
        if self.max_per_class < 0:
            raise ValueError(f"max_per_class must be >= 0, not {self.max_per_class}")
        if not 0 <= self.max_id_loss < 1:
            raise ValueError(f"max_id_loss must be in [0, 1), not {self.max_id_loss}")
        if self.ood_pick not in ("permissive", "middle"):
            raise ValueError(f"ood_pick must be permissive or middle, not {self.ood_pick!r}")
        if self.noise_method not in ("credit", "exclude", "rate"):
            raise ValueError(f"unknown noise_method {self.noise_method!r}")
        if self.query_prior_strength < 0:
            raise ValueError(f"query_prior_strength must be >= 0, not {self.query_prior_strength}")
        if self.pool_sample < 0:
            raise ValueError(f"pool_sample must be >= 0, not {self.pool_sample}")


DEFAULT_CONFIG = PseudolabelConfig()


# ------------------------------------------------------------------ heads


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclasses.dataclass
class Head:
    """A multinomial logistic-regression head on L2-normalized embeddings."""

    model: object  # sklearn LogisticRegression
    classes: np.ndarray  # the class indices it was trained on

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, NUM_CLASSES) probabilities; classes absent from training get 0."""
        out = np.zeros((len(x), NUM_CLASSES), np.float32)
        if len(x):
            out[:, self.classes] = self.model.predict_proba(l2_normalize(x))
        return out


def fit_head(x: np.ndarray, y: np.ndarray, regularization: float = 10.0) -> Head:
    """Trains one head on embeddings ``x`` (n, d) and class indices ``y`` (n,)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, np.int64)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError("a head needs labeled images of at least two classes")
    model = LogisticRegression(C=regularization, max_iter=2000)
    with warnings.catch_warnings():  # small labeled sets: "more classes than 50% of samples"
        warnings.filterwarnings(
            "ignore", message="The number of unique classes", category=UserWarning
        )
        model.fit(l2_normalize(x), y)
    return Head(model=model, classes=model.classes_.astype(np.int64))


def fold_ids(y: np.ndarray, folds: int, seed: int = 2021) -> np.ndarray:
    """Stratified fold index (0..folds-1) of each labeled image.

    A class with fewer images than folds cannot appear in every fold; its images
    are spread over as many folds as it has (sklearn warns; the report lists
    such thin classes instead).
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y, np.int64)
    if len(y) < folds:
        raise ValueError(f"{len(y)} labeled images cannot be split into {folds} folds")
    ids = np.empty(len(y), np.int64)
    if np.bincount(y).max() < folds:  # sklearn refuses when no class fills every fold
        rng, offset = np.random.default_rng(seed), 0
        for c in np.unique(y):
            mine = rng.permutation(np.flatnonzero(y == c))
            ids[mine] = (offset + np.arange(len(mine))) % folds
            offset += len(mine)
        return ids
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y)):
            ids[held_out] = k
    return ids


@dataclasses.dataclass
class KFoldHeads:
    """K heads and what they say about the labeled set.

    Attributes:
      heads: head k was trained without fold k.
      fold: (n,) the fold of each labeled image.
      oof: (n, NUM_CLASSES) out-of-fold probabilities (from the head that never saw it).
    """

    heads: list[Head]
    fold: np.ndarray
    oof: np.ndarray

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(K, n, NUM_CLASSES): every head's probabilities for ``x``."""
        return np.stack([head.predict_proba(x) for head in self.heads])

    def stacked(self) -> StackedHeads:
        """The K heads as one matrix product (what the stage scores with)."""
        return StackedHeads.from_heads(self.heads)


@dataclasses.dataclass
class StackedHeads:
    """K logistic-regression heads as one (d, K·NUM_CLASSES) matrix product.

    The same probabilities as ``Head.predict_proba`` of each head (to float32
    rounding), without normalizing the batch once per head or calling sklearn K
    times. A class a head never saw has logit −inf there, so probability 0.

    Attributes:
      weight: (d, K·NUM_CLASSES) float32.
      bias: (K·NUM_CLASSES,) float32, −inf for classes a head never saw.
      classes: per head, the class indices it was trained on.
    """

    weight: np.ndarray
    bias: np.ndarray
    classes: list[np.ndarray]

    @classmethod
    def from_heads(cls, heads: Sequence[Head]) -> StackedHeads:
        d = heads[0].model.coef_.shape[1]
        weight = np.zeros((len(heads), NUM_CLASSES, d), np.float32)
        bias = np.full((len(heads), NUM_CLASSES), -np.inf, np.float32)
        for k, head in enumerate(heads):
            coef = np.asarray(head.model.coef_, np.float32)
            intercept = np.asarray(head.model.intercept_, np.float32)
            if len(head.classes) == 2 and len(coef) == 1:  # binary: p1 = sigmoid(w·x + b)
                coef = np.stack([np.zeros_like(coef[0]), coef[0]])
                intercept = np.array([0.0, intercept[0]], np.float32)
            weight[k, head.classes] = coef
            bias[k, head.classes] = intercept
        return cls(
            weight=np.ascontiguousarray(weight.reshape(-1, d).T),
            bias=bias.reshape(-1),
            classes=[h.classes for h in heads],
        )

    @property
    def folds(self) -> int:
        return len(self.classes)

    def predict_proba_unit(self, u: np.ndarray) -> np.ndarray:
        """(K, n, NUM_CLASSES) probabilities of already L2-normalized rows ``u``."""
        logits = (np.asarray(u, np.float32) @ self.weight + self.bias).reshape(
            len(u), self.folds, NUM_CLASSES
        )
        logits -= logits.max(2, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(2, keepdims=True)
        return p.transpose(1, 0, 2)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(K, n, NUM_CLASSES) probabilities of raw embeddings ``x``."""
        return self.predict_proba_unit(l2_normalize(x))


def train_kfold(
    x: np.ndarray, y: np.ndarray, config: PseudolabelConfig = DEFAULT_CONFIG
) -> KFoldHeads:
    """Trains K heads on stratified folds and returns them with OOF probabilities."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    fold = fold_ids(y, config.folds, config.seed)
    oof = np.zeros((len(y), NUM_CLASSES), np.float32)
    heads = []
    for k in range(config.folds):
        held_out = fold == k
        head = fit_head(x[~held_out], y[~held_out], config.regularization)
        oof[held_out] = head.predict_proba(x[held_out])
        heads.append(head)
    return KFoldHeads(heads=heads, fold=fold, oof=oof)


# ------------------------------------------------------------------ thresholds


def lowest_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    target: float,
    min_support: int = 1,
    floor: float | None = None,
    weight: np.ndarray | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> float | None:
    """Lowest t such that the predictions with confidence ≥ t are ≥ ``target`` correct.

    Only thresholds keeping at least ``min_support`` predictions count. Returns
    None when no such threshold exists. ``correct`` may be fractional; ``weight``
    is each prediction's weight in the denominator (0: not counted); ``transform``
    maps the precision curve before the comparison (a noise correction). With
    ``floor``: when all predictions together meet the target, the answer is the
    floor rather than the lowest confidence seen (which would drop the ≈1/(n+1)
    of candidates less confident than every OOF prediction for no measured reason).
    """
    confidence = np.asarray(confidence, np.float64)
    hits = np.asarray(correct, np.float64)
    weight = np.ones_like(hits) if weight is None else np.asarray(weight, np.float64)
    if not len(confidence):
        return None
    order = np.argsort(-confidence, kind="stable")
    conf, hits, weight = confidence[order], hits[order], weight[order]
    counted = np.cumsum(weight)
    precision = np.cumsum(hits) / np.maximum(counted, 1e-12)
    if transform is not None:
        precision = transform(precision)
    # A threshold equal to a confidence keeps every tie: evaluate at the last of each tie.
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    ok = (precision >= target) & last_of_tie & (counted >= min_support)
    if not ok.any():
        return None
    if ok[-1] and floor is not None:
        return float(min(floor, conf[-1]))
    return float(conf[np.nonzero(ok)[0].max()])


@dataclasses.dataclass
class Thresholds:
    """Per-class thresholds and how each was chosen.

    Attributes:
      tau: (NUM_CLASSES,) thresholds on the mean max-probability (inf: keeps nothing).
      kind: per class, TAU_CLASS, TAU_POOLED or TAU_UNREACHABLE.
      support: per class, OOF predictions of that class.
      pooled: the threshold calibrated on all classes together (None if unreachable).
    """

    tau: np.ndarray
    kind: list[str]
    support: np.ndarray
    pooled: float | None


def calibrate_thresholds(
    oof: np.ndarray, y: np.ndarray, config: PseudolabelConfig = DEFAULT_CONFIG
) -> Thresholds:
    """τ_c: the lowest threshold at which class c's OOF predictions reach the target precision.

    Each OOF prediction is (argmax class, max probability, correct?). A class with
    fewer than ``min_support`` predictions uses the pooled threshold; every
    threshold is at least ``threshold_floor``.
    """
    oof = np.asarray(oof, np.float32)
    y = np.asarray(y, np.int64)
    predicted = oof.argmax(1)
    confidence = oof.max(1)
    correct = predicted == y
    pooled = lowest_threshold(confidence, correct, config.target_precision, config.min_support)
    tau = np.full(NUM_CLASSES, np.inf)
    kind, support = [], np.zeros(NUM_CLASSES, np.int64)
    for c in range(NUM_CLASSES):
        mine = predicted == c
        support[c] = mine.sum()
        if support[c] >= config.min_support:
            t = lowest_threshold(
                confidence[mine], correct[mine], config.target_precision, config.min_support
            )
            source = TAU_CLASS
        else:
            t, source = pooled, TAU_POOLED
        if t is None:
            kind.append(TAU_UNREACHABLE)
            continue
        tau[c] = max(t, config.threshold_floor)
        kind.append(source)
    return Thresholds(tau=tau, kind=kind, support=support, pooled=pooled)


# ------------------------------------------------------------------ the keep rule


@dataclasses.dataclass
class Decisions:
    """What the keep rule says about each candidate.

    Attributes:
      label: (n,) class of the soft label's argmax.
      confidence: (n,) the soft label's max probability (mean over heads).
      soft_label: (n, NUM_CLASSES) mean of the K heads' probabilities.
      head_labels: (n, K) each head's class.
      agree, confident, query_ok: (n,) each rule's verdict on its own.
      reason: (n,) the first failed rule, or None when kept.
    """

    label: np.ndarray
    confidence: np.ndarray
    soft_label: np.ndarray
    head_labels: np.ndarray
    agree: np.ndarray
    confident: np.ndarray
    query_ok: np.ndarray
    reason: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        return np.array([r is None for r in self.reason], bool)


def decide(
    head_probs: np.ndarray,
    tau: np.ndarray,
    query_class: np.ndarray | None = None,
    config: PseudolabelConfig = DEFAULT_CONFIG,
) -> Decisions:
    """Applies the keep rule to (K, n, NUM_CLASSES) head probabilities.

    ``query_class`` holds the class index each candidate was searched for (−1:
    unknown, which passes the query rule). The per-class cap is separate
    (``cap_per_class``): it needs every candidate of a class at once.
    """
    head_probs = np.asarray(head_probs, np.float32)
    n = head_probs.shape[1]
    soft = head_probs.mean(0)
    label = soft.argmax(1) if n else np.zeros(0, np.int64)
    confidence = soft.max(1) if n else np.zeros(0, np.float32)
    head_labels = head_probs.argmax(2).T if n else np.zeros((0, len(head_probs)), np.int64)
    agree = (head_labels == label[:, None]).all(1)
    confident = confidence >= np.asarray(tau)[label]
    if query_class is None:
        query_ok = np.ones(n, bool)
    else:
        query_class = np.asarray(query_class, np.int64)
        query_ok = (query_class < 0) | (query_class == label)
    reason = np.full(n, None, object)
    checks = [
        (config.require_agreement, agree, FOLD_DISAGREEMENT),
        (True, confident, LOW_CONFIDENCE),
        (config.require_query_match, query_ok, QUERY_MISMATCH),
    ]
    for enabled, passed, why in checks:
        if enabled:
            reason[(reason == None) & ~passed] = why  # noqa: E711 (elementwise)
    return Decisions(label, confidence, soft, head_labels, agree, confident, query_ok, reason)


def cap_per_class(
    label: np.ndarray, confidence: np.ndarray, kept: np.ndarray, cap: int
) -> np.ndarray:
    """Mask of kept candidates beyond the ``cap`` most confident of their class (0: no cap).

    Ties in confidence are broken by position, so the result is deterministic.
    """
    label = np.asarray(label)
    over = np.zeros(len(label), bool)
    if cap <= 0:
        return over
    for c in np.unique(label[kept]):
        idx = np.nonzero(kept & (label == c))[0]
        if len(idx) > cap:
            order = idx[np.argsort(-np.asarray(confidence)[idx], kind="stable")]
            over[order[cap:]] = True
    return over


# ------------------------------------------------------------------ diagnostics


def top_k_accuracy(probs: np.ndarray, y: np.ndarray, k: int = 1) -> float:
    """Share of rows whose true class is among the k most probable (0 for no rows)."""
    probs = np.asarray(probs)
    y = np.asarray(y, np.int64)
    if not len(y):
        return 0.0
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == y[:, None]).any(1).mean())


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """Per confidence bin: count, mean confidence and accuracy of the argmax."""
    probs = np.asarray(probs)
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(y)
    which = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, confidence, bins) / count
        accuracy = np.bincount(which, correct.astype(float), bins) / count
    return {
        "edges": np.linspace(0, 1, bins + 1),
        "count": count,
        "confidence": mean_conf,
        "accuracy": accuracy,
    }


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE: the count-weighted mean |accuracy − confidence| over confidence bins."""
    table = reliability(probs, y, bins)
    used = table["count"] > 0
    if not used.any():
        return 0.0
    gaps = np.abs(table["accuracy"][used] - table["confidence"][used])
    return float((gaps * table["count"][used]).sum() / table["count"][used].sum())


def label_issues(oof: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of labeled images whose OOF argmax contradicts their label, worst first.

    Ranked by self-confidence (the OOF probability of the given label), lowest
    first, as cleanlab's ``rank_by='self_confidence'``. Nothing is removed: this
    is a list for review.
    """
    oof = np.asarray(oof)
    y = np.asarray(y, np.int64)
    suspects = np.nonzero(oof.argmax(1) != y)[0]
    self_confidence = oof[suspects, y[suspects]]
    return suspects[np.argsort(self_confidence, kind="stable")]


def precision_coverage(
    predicted: np.ndarray, truth: np.ndarray, kept: np.ndarray, on_topic: np.ndarray
) -> dict[str, float]:
    """Precision of the kept labels against the truth, and coverage of the on-topic pool.

    ``truth`` is −1 for a candidate of no CamSDD class (any label kept is wrong);
    coverage is correct kept labels over candidates that have a true class.
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    kept, on_topic = np.asarray(kept, bool), np.asarray(on_topic, bool)
    correct = kept & (predicted == truth)
    return {
        "kept": int(kept.sum()),
        "correct": int(correct.sum()),
        "precision": float(correct.sum() / kept.sum()) if kept.any() else float("nan"),
        "coverage": float(correct.sum() / on_topic.sum()) if on_topic.any() else float("nan"),
    }


def class_indices(folders: Sequence[str | None]) -> np.ndarray:
    """Class folder names → indices (−1 for None, empty or unknown)."""
    from pipeline.core.classes import CLASS_FOLDERS

    index = {name: i for i, name in enumerate(CLASS_FOLDERS)}
    return np.array([index.get(f or "", -1) for f in folders], np.int64)

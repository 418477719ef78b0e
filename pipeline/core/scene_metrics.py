"""Classifier metrics as the challenge reports them: numpy in, numpy out.

Top-k counts **ties against the model**: a quantized model's uint8 outputs often
tie (many classes at 0), and breaking ties by class index would quietly favour
low-numbered classes. A row is top-k correct only if fewer than k other classes
score at least as high as the true class.
"""

from __future__ import annotations

import numpy as np


def top_k_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per row: is the true class among the k best, ties counted against it? (bool array)"""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} do not match")
    true_score = scores[np.arange(len(labels)), labels]
    # Other classes scoring >= the true class (the true class itself is excluded).
    at_least = (scores >= true_score[:, None]).sum(axis=1) - 1
    return at_least < k


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows that are top-k correct (0.0 for no rows)."""
    if not len(labels):
        return 0.0
    return float(top_k_correct(scores, labels, k).mean())


def predictions(scores: np.ndarray) -> np.ndarray:
    """Argmax per row (lowest class index on ties: a definite answer for the confusion matrix)."""
    return np.asarray(scores).argmax(axis=1)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts, int64 (num_classes, num_classes)."""
    labels = np.asarray(labels, np.int64)
    predicted = np.asarray(predicted, np.int64)
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall per class from a confusion matrix; NaN for classes with no examples."""
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)


def challenge_score(top1: float, top3: float, runtime_ms: float, constant: float = 1.0) -> float:
    """MAI 2021 scene detection: ``2 ** (2 · (top1 + top3)) / (C · runtime)``.

    ``top1``/``top3`` in percent (as in the challenge tables), runtime in ms. The
    organisers' normalising constant C was not published with the formula, so the
    score only ranks models measured with the same C on the same device.
    """
    if runtime_ms <= 0:
        raise ValueError(f"runtime must be positive, not {runtime_ms}")
    return float(2.0 ** (2.0 * (top1 + top3)) / (constant * runtime_ms))


def most_confused(matrix: np.ndarray, names: list[str], count: int = 5) -> list[dict]:
    """The largest off-diagonal cells: which true class went to which, how often."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:count]
    pairs = []
    for flat in order:
        true, predicted = divmod(int(flat), matrix.shape[1])
        if off[true, predicted] == 0:
            break
        pairs.append(
            {"true": names[true], "predicted": names[predicted], "count": int(off[true, predicted])}
        )
    return pairs

"""Random-hyperplane LSH for cosine near-duplicates among candidate embeddings.

``LSH_BANDS`` bands of ``LSH_BITS`` sign bits each; two candidates sharing any band
are compared exactly (``verify_bucket``). Beam's shuffle does the bucketing: every
candidate emits one key per band. Numpy in, numpy out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.core.dedup import normalize_rows

LSH_BANDS, LSH_BITS, LSH_SEED = 24, 14, 20261124


def _hyperplanes(dim: int) -> np.ndarray:
    rng = np.random.default_rng(LSH_SEED)
    return rng.standard_normal((dim, LSH_BANDS * LSH_BITS)).astype(np.float32)


def lsh_signatures(vectors: np.ndarray) -> np.ndarray:
    """(n, LSH_BANDS) band codes: the signs of random projections, LSH_BITS per band."""
    vectors = np.asarray(vectors, np.float32)
    bits = (vectors @ _hyperplanes(vectors.shape[1])) > 0
    weights = 1 << np.arange(LSH_BITS, dtype=np.int64)
    return (bits.reshape(len(vectors), LSH_BANDS, LSH_BITS) * weights).sum(-1)


def lsh_buckets(row: dict[str, Any]) -> Iterable[tuple[tuple[str, int, int], tuple]]:
    """(("emb", band, code), (key, vector)) for a candidate that has an embedding."""
    vector = row.get("embedding")
    if vector is None:
        return
    vector = np.asarray(vector, np.float32)
    for band, code in enumerate(lsh_signatures(vector[None])[0]):
        yield ("emb", band, int(code)), (row["key"], vector)


def verify_bucket(element, min_cosine: float) -> Iterable[tuple[tuple[str, str], float]]:
    """((key, key), 1 − cosine) of every pair in one LSH bucket at or above ``min_cosine``."""
    _, entries = element
    entries = sorted(entries, key=lambda e: e[0])
    if len(entries) < 2:
        return
    keys = [e[0] for e in entries]
    unit = normalize_rows(np.stack([e[1] for e in entries]))
    sim = unit @ unit.T
    left, right = np.nonzero(np.triu(sim >= min_cosine, 1))
    for i, j in zip(left, right, strict=True):
        if keys[i] != keys[j]:
            yield (keys[i], keys[j]), round(float(1 - sim[i, j]), 4)

"""Random-hyperplane LSH for cosine near-duplicates among candidate embeddings.

``LSH_BANDS`` bands of ``LSH_BITS`` sign bits each; two candidates sharing any band
are compared exactly (``verify_bucket``). Beam's shuffle does the bucketing: every
candidate emits one key per band. Numpy in, numpy out.

The hyperplanes cut through the pool's mean vector (``mean``: the candidates' mean
embedding). A backbone's pooled ReLU features are non-negative and share a large mean,
so hyperplanes through the origin give most vectors the same signs: buckets fill and
the exact verification grows with the square of the pool (``benchmarks/bench_scale.py``).
Centred, unrelated images collide at about chance (2^-LSH_BITS per band).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.core.dedup import normalize_rows

LSH_BANDS, LSH_BITS, LSH_SEED = 24, 14, 20261124


@functools.lru_cache(maxsize=4)
def _hyperplanes(dim: int) -> np.ndarray:
    """Drawn once per process and dimension (1 ms each: it was redrawn per candidate)."""
    rng = np.random.default_rng(LSH_SEED)
    return rng.standard_normal((dim, LSH_BANDS * LSH_BITS)).astype(np.float32)


def lsh_signatures(vectors: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """(n, LSH_BANDS) band codes: the signs of random projections of ``vectors − mean``,
    LSH_BITS per band."""
    vectors = np.asarray(vectors, np.float32)
    if mean is not None:
        vectors = vectors - np.asarray(mean, np.float32)
    bits = (vectors @ _hyperplanes(vectors.shape[1])) > 0
    weights = 1 << np.arange(LSH_BITS, dtype=np.int64)
    return (bits.reshape(len(vectors), LSH_BANDS, LSH_BITS) * weights).sum(-1)


def lsh_buckets(
    row: dict[str, Any], mean: np.ndarray | None = None
) -> Iterable[tuple[tuple[str, int, int], tuple]]:
    """(("emb", band, code), (key, vector)) for a candidate that has an embedding;
    ``mean`` is the pool's mean embedding (see the module's note)."""
    vector = row.get("embedding")
    if vector is None:
        return
    vector = np.asarray(vector, np.float32)
    for band, code in enumerate(lsh_signatures(vector[None], mean)[0]):
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

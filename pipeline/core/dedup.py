"""Dedup decisions: plain functions over numbers and dicts. No IO, no Beam.

``dedup_stage`` wires these into a Beam pipeline.

Each image carries two 64-bit perceptual hashes (``HASH_KINDS``, computed by the
fetch resizer): of the 576×384 pixels and of the whole frame with letterbox bars
trimmed. Two images match when either kind is within ``radius`` bits (the match
distance is the smaller one), when their source or output sha256 is equal, or,
when teacher embeddings are given, when their cosine similarity reaches
``min_cosine``.

Decisions, for each candidate that fetch kept:

* it matches a labeled image (directly, or through its duplicate cluster): dropped
  with ``leak:test``, ``leak:validation`` or ``duplicate_of_train`` (the worst split
  wins: test, then validation, then train);
* else, within its cluster (connected components of candidate matches) one is kept,
  the most photo inside any letterbox, then the most permissive license; the others are
  dropped with ``duplicate_of:<kept key>``;
* else it is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import ImageOps
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.core import hamming, images, resizer
from pipeline.core.schema import DROPPED, KEPT

HASH_KINDS = ("phash", "phash_frame")
#: Chosen with benchmarks/dedup_accuracy.py (README, "Thresholds"): at 6 bits every
#: hash-level edit is found with recall ≥ 0.98 at precision 1.00, and the 1M self-join
#: is 129× faster than brute force (2.7× slower at 8). pHash distances are even (both
#: codes have 32 bits set), so 7 behaves as 6.
DEFAULT_RADIUS = 6
#: Teacher-embedding cosine that counts as a duplicate: recall ≥ 0.93 on flips, crops
#: and rotations at precision 1.00; distinct photos reach 0.75 (README, "Thresholds").
DEFAULT_MIN_COSINE = 0.92
#: Worst first: a candidate that matches several splits gets the first one's reason.
SPLIT_REASONS = {
    "test": "leak:test",
    "validation": "leak:validation",
    "train": "duplicate_of_train",
}
DUPLICATE_OF = "duplicate_of:"


def reason_family(reason: str) -> str:
    """Drop reasons grouped for counting: every ``duplicate_of:<key>`` is one family."""
    return "duplicate_of" if reason.startswith(DUPLICATE_OF) else reason


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """Thresholds of one dedup run.

    Attributes:
      radius: Hamming radius (bits of 64) within which two hashes match.
      min_cosine: teacher-embedding cosine similarity at which two images match;
        used only when embeddings are given.
      embeddings: match on embeddings as well as hashes.
    """

    radius: int = DEFAULT_RADIUS
    min_cosine: float = DEFAULT_MIN_COSINE
    embeddings: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.radius <= hamming.MAX_RADIUS:
            raise ValueError(f"radius must be in [0, {hamming.MAX_RADIUS}], not {self.radius}")
        if not 0.0 < self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in (0, 1], not {self.min_cosine}")


DEFAULT_CONFIG = DedupConfig()


@dataclasses.dataclass(frozen=True)
class Match:
    """One image matching another: what, how, how far."""

    other: str  # candidate key, or reference key "<split>/<class folder>/<file>"
    kind: str  # sha256 | phash | embedding
    distance: float  # bits for phash, 1 − cosine for embedding, 0 for sha256


def pair_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest Hamming distance over the hash kinds (last axis) of two code arrays."""
    return np.bitwise_count(np.bitwise_xor(a, b)).min(axis=-1).astype(np.int64)


def code_matrix(phash: Sequence[int | None], phash_frame: Sequence[int | None]) -> np.ndarray:
    """(n, 2) uint64 codes. A missing frame hash (older manifests) repeats the pHash."""
    first = np.array([int(value) for value in phash], dtype=np.uint64)
    frame = np.array(
        [int(f) if f is not None else int(p) for p, f in zip(phash, phash_frame, strict=True)],
        dtype=np.uint64,
    )
    return np.stack([first, frame], axis=1).reshape(-1, 2)


def hash_matches(codes: np.ndarray, index_codes: np.ndarray, radius: int) -> hamming.Matches:
    """(query row, index row, min distance) of every pair matching on any hash kind."""
    found = []
    for kind in range(codes.shape[1]):
        matches = hamming.HammingIndex(index_codes[:, kind], radius).query(codes[:, kind])
        found.append(matches)
    merged = hamming.Matches.concat(found).unique()
    merged.distance = pair_distance(codes[merged.left], index_codes[merged.right])
    return merged


def self_matches(codes: np.ndarray, radius: int) -> hamming.Matches:
    """Pairs ``left < right`` within one set matching on any hash kind (components-exact)."""
    found = [hamming.self_join(codes[:, kind], radius) for kind in range(codes.shape[1])]
    merged = hamming.Matches.concat(found).unique()
    merged.distance = pair_distance(codes[merged.left], codes[merged.right])
    return merged


def cosine_matches(
    queries: np.ndarray, index: np.ndarray, min_cosine: float, block: int = 4096
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query row, index row, cosine) of every pair at or above ``min_cosine``.

    Rows must be L2-normalised. Exact: a blocked matrix product, so memory stays at
    ``block × len(index)`` floats; for 12,000 reference images that is 200 MB per block.
    """
    lefts, rights, sims = [], [], []
    for start in range(0, len(queries), block):
        sim = queries[start : start + block] @ index.T
        left, right = np.nonzero(sim >= min_cosine)
        lefts.append(left + start)
        rights.append(right)
        sims.append(sim[left, right])
    if not lefts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(lefts), np.concatenate(rights), np.concatenate(sims)


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def components(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``count`` nodes given undirected edges."""
    graph = coo_matrix((np.ones(len(left), np.int8), (left, right)), shape=(count, count))
    return connected_components(graph, directed=False)[1]


# Most permissive first. Matched on the normalised short name (CC BY-SA 4.0 -> cc-by-sa).
_LICENSE_ORDER = (
    ("public-domain", r"^(pdm|cc0|public[- ]?domain|no known copyright)"),
    ("cc-by", r"^cc[- ]?by(?![- ]?(nc|nd|sa))"),
    ("cc-by-sa", r"^cc[- ]?by[- ]?sa"),
    ("cc-by-nd", r"^cc[- ]?by[- ]?nd"),
    ("cc-by-nc", r"^cc[- ]?by[- ]?nc(?![- ]?(nd|sa))"),
    ("cc-by-nc-sa", r"^cc[- ]?by[- ]?nc[- ]?sa"),
    ("cc-by-nc-nd", r"^cc[- ]?by[- ]?nc[- ]?nd"),
)


def license_rank(license_name: str | None) -> int:
    """0 for the most permissive license (public domain, CC0), larger for stricter ones.

    Unknown or missing licenses rank last, so a duplicate with a known open license
    is kept instead.
    """
    text = (license_name or "").strip().lower().replace("_", "-")
    for rank, (_, pattern) in enumerate(_LICENSE_ORDER):
        if re.search(pattern, text):
            return rank
    return len(_LICENSE_ORDER)


def keeper_order(row: dict[str, Any]) -> tuple:
    """Sort key: the first candidate of a cluster is the one kept.

    The most photo first: the area inside any letterbox (a padded copy is no bigger
    than its original), then the least padding, then the most permissive license.
    """
    width, height = row.get("width") or 0, row.get("height") or 0
    content = (row.get("content_width") or width) * (row.get("content_height") or height)
    padding = 1 - content / (width * height) if width and height else 1.0
    # In steps of 16 px of the content's side: a box found a pixel larger in a padded
    # copy is the same photo, and then the one with the least padding wins.
    size = round(content**0.5 / 16)
    return (-size, round(padding, 2), license_rank(row.get("license")), row["key"])


def _worst(matches: Iterable[tuple[str, Match]]) -> tuple[str, Match] | None:
    """The (split, match) whose split is worst (test first), closest match first."""
    order = list(SPLIT_REASONS)
    ranked = sorted(matches, key=lambda item: (order.index(item[0]), item[1].distance))
    return ranked[0] if ranked else None


def decide_cluster(
    members: list[dict[str, Any]],
    reference_matches: dict[str, list[tuple[str, Match]]],
    distance_to: Any,
) -> list[dict[str, Any]]:
    """Status, reason and match fields for every member of one duplicate cluster.

    Args:
      members: rows with at least ``key``, ``width``, ``height`` and ``license``.
      reference_matches: candidate key → [(split, Match)] against the labeled splits.
      distance_to: ``f(row, other_row) -> Match`` describing how two members match.

    Returns:
      One dict per member with ``status``, ``reason``, ``match_key``, ``match_kind``,
      ``match_distance``, ``cluster`` and ``cluster_size``.
    """
    members = sorted(members, key=keeper_order)
    cluster = min(row["key"] for row in members)
    out = []
    worst = _worst(m for row in members for m in reference_matches.get(row["key"], []))
    for row in members:
        decided = {"cluster": cluster, "cluster_size": len(members)}
        own = _worst(reference_matches.get(row["key"], []))
        if own is not None:
            split, match = own
            decided.update(
                status=DROPPED,
                reason=SPLIT_REASONS[split],
                match_key=match.other,
                match_kind=match.kind,
                match_distance=float(match.distance),
            )
        elif worst is not None:  # its duplicate matches a labeled image
            split, match = worst
            decided.update(
                status=DROPPED,
                reason=SPLIT_REASONS[split],
                match_key=match.other,
                match_kind="cluster",
                match_distance=None,
            )
        elif row is members[0]:
            decided.update(status=KEPT, reason=None, match_key=None, match_kind=None)
            decided["match_distance"] = None
        else:
            link = distance_to(row, members[0])
            decided.update(
                status=DROPPED,
                reason=DUPLICATE_OF + members[0]["key"],
                match_key=members[0]["key"],
                match_kind=link.kind,
                match_distance=float(link.distance),
            )
        out.append({**row, **decided})
    return out


def row_codes(row: dict[str, Any]) -> np.ndarray:
    return code_matrix([row["phash"]], [row.get("phash_frame")])[0]


def member_link(row: dict[str, Any], other: dict[str, Any]) -> Match:
    """How two candidates of one cluster match: equal bytes, or their hash distance.

    Members joined only through others (or through embeddings) may be further apart
    than the radius; the distance says so.
    """
    for column in ("source_sha256", "sha256"):
        if row.get(column) and row.get(column) == other.get(column):
            return Match(other["key"], "sha256", 0.0)
    distance = int(pair_distance(row_codes(row), row_codes(other)))
    return Match(other["key"], "phash", float(distance))


def reference_record(split: str, key: str, data: bytes) -> dict[str, Any]:
    """Hashes of one labeled image, as the fetch stage hashes a candidate.

    Adds ``phash_mirror``, the pHash of the mirrored image: a mirrored copy of a labeled
    image matches it (one more DCT per labeled image, none per candidate).

    Raises images.InvalidImageError when the file is not a usable image.
    """
    rgb = images.to_rgb(images.open_image(data))
    fitted = rgb if rgb.size == images.TARGET_SIZE else images.fit_to_size(rgb)
    return {
        "split": split,
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "phash": resizer.phash64(fitted),
        "phash_frame": resizer.frame_phash64(rgb),
        "phash_mirror": resizer.phash64(ImageOps.mirror(fitted)),
    }


def reference_codes(records: Sequence[dict[str, Any]]) -> np.ndarray:
    """(n, 3) codes of labeled images: pHash, frame pHash, pHash of the mirror image."""
    codes = code_matrix([r["phash"] for r in records], [r.get("phash_frame") for r in records])
    mirror = np.array(
        [
            int(r.get("phash_mirror") if r.get("phash_mirror") is not None else r["phash"])
            for r in records
        ],
        dtype=np.uint64,
    )
    return np.concatenate([codes, mirror.reshape(-1, 1)], axis=1)


def probe_codes(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """(n, 3) codes of candidates against ``reference_codes``: the plain pHash probes the
    mirror column, so a mirrored copy is found without hashing every candidate twice."""
    codes = code_matrix([r["phash"] for r in rows], [r.get("phash_frame") for r in rows])
    return np.concatenate([codes, codes[:, :1]], axis=1)

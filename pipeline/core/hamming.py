"""Exact Hamming-radius search over 64-bit codes by multi-index hashing.

Numpy in, numpy out. A code is split into ``m`` substrings (tables). By the
pigeonhole principle (Norouzi et al., refined form), two codes within ``radius``
bits have, for some table ``t``, substrings within ``table_radii(radius)[t]`` bits:
with ``radius = m·q + a``, one of the first ``a + 1`` tables within ``q`` or one of
the others within ``q − 1``. So each table is searched exactly within its small
radius (0, 1 or 2 bits: the code's own bucket plus its 1- and 2-bit flips, looked
up in a sorted table), every candidate is verified with an exact popcount, and
nothing within the radius is missed (tested against brute force). ``m`` is the
smallest number ≥ 3 that keeps every table radius ≤ 2, so substrings stay about
log2(n) bits long for the millions of codes this is built for.

``self_join`` finds the pairs in one set (duplicates within the crawl);
``HammingIndex`` holds a fixed set (the labeled reference) to query batches against.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

CODE_BITS = 64
MAX_RADIUS = 20  # m = 7 tables of ≤ 10 bits; beyond that the tables stop being selective


def popcount(values: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64."""
    return np.bitwise_count(values).astype(np.int64)


def hamming_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise Hamming distance of two uint64 arrays."""
    return popcount(np.bitwise_xor(a, b))


def as_codes(codes) -> np.ndarray:
    """Codes as uint64; accepts signed int64 (Parquet's type) bit for bit."""
    array = np.asarray(codes)
    if array.dtype == np.uint64:
        return array
    if array.dtype.kind in "iu":
        return array.astype(np.int64).view(np.uint64)
    raise TypeError(f"codes must be integers, not {array.dtype}")


def substrings(radius: int) -> list[tuple[int, int]]:
    """(shift, width) of each table's substring for a search radius."""
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"radius must be in [0, {MAX_RADIUS}], not {radius}")
    count = max(3, -(-(radius + 1) // 3))  # ceil((radius + 1) / 3): table radii ≤ 2
    widths = [CODE_BITS // count + (1 if i < CODE_BITS % count else 0) for i in range(count)]
    shifts = np.cumsum([0, *widths[:-1]])
    return [(int(shift), width) for shift, width in zip(shifts, widths, strict=True)]


def table_radii(radius: int) -> list[int]:
    """How far each table is searched (−1: not at all) so no pair within ``radius`` is missed."""
    count = len(substrings(radius))
    quotient, rest = divmod(radius, count)
    return [quotient if table <= rest else quotient - 1 for table in range(count)]


def flip_masks(width: int, radius: int) -> list[int]:
    """Zero and every mask of at most ``radius`` bits within ``width`` bits."""
    masks = [0]
    for bits in range(1, radius + 1):
        for positions in itertools.combinations(range(width), bits):
            masks.append(sum(1 << p for p in positions))
    return masks


def split_radius(table_radius: int) -> tuple[int, int]:
    """Flips stored with the table and flips probed by queries: x ^ a == y ^ b, |a|+|b| ≤ r.

    Storing 1-bit flips turns a 2-bit search from 1 + w + w(w−1)/2 probes into 1 + w.
    """
    stored = table_radius // 2
    return stored, table_radius - stored


def _substring(codes: np.ndarray, shift: int, width: int) -> np.ndarray:
    return ((codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)


class _Table:
    """(substring ^ stored flip, row) entries sorted by value; a bucket is found in O(1)."""

    def __init__(self, values: np.ndarray, width: int, stored_flips: int):
        masks = np.array(flip_masks(width, stored_flips), np.int64)
        rows = np.arange(len(values), dtype=np.int64)
        row_bits = max(1, int(len(values)).bit_length())
        # Sort (value, row) packed in one int64: much faster than an argsort.
        packed = np.sort((((values[None, :] ^ masks[:, None]) << row_bits) | rows[None, :]).ravel())
        self.values = packed >> row_bits
        self.rows = packed & ((1 << row_bits) - 1)
        del packed
        # Direct addressing: an offset per possible value (≤ 2^22 + 1), so a probe is
        # one gather instead of two binary searches.
        self._offsets = np.searchsorted(self.values, np.arange((1 << width) + 1))

    def buckets(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) of the entries whose value equals each probe."""
        low = self._offsets[probes]
        return low, self._offsets[probes + 1] - low

    def expand(self, query_rows: np.ndarray, low: np.ndarray, count: np.ndarray):
        """All (query row, table row) pairs of the buckets found."""
        hit = count > 0
        query_rows, low, count = query_rows[hit], low[hit], count[hit]
        total = int(count.sum())
        run_start = np.repeat(np.cumsum(count) - count, count)
        at = np.repeat(low, count) + (np.arange(total) - run_start)
        return np.repeat(query_rows, count), self.rows[at]


def _search(codes: np.ndarray, index_codes: np.ndarray, radius: int, chunk: int):
    """Yields verified (query row, index row, distance) arrays, table by table.

    A pair may come up more than once (from several tables or flips).
    """
    rows = np.arange(len(codes), dtype=np.int64)
    for (shift, width), table_radius in zip(substrings(radius), table_radii(radius), strict=True):
        if table_radius < 0:
            continue
        stored, probed = split_radius(table_radius)
        table = _Table(_substring(index_codes, shift, width), width, stored)
        values = _substring(codes, shift, width)
        for start in range(0, len(values), chunk):
            part, part_rows = values[start : start + chunk], rows[start : start + chunk]
            for mask in flip_masks(width, probed):
                left, right = table.expand(part_rows, *table.buckets(part ^ mask))
                distance = hamming_distance(codes[left], index_codes[right])
                ok = distance <= radius
                if ok.any():
                    yield left[ok], right[ok], distance[ok]
        del table


@dataclass
class Matches:
    """Pairs of rows within the radius: ``left[i]`` ~ ``right[i]`` at ``distance[i]``."""

    left: np.ndarray
    right: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return len(self.left)

    @classmethod
    def empty(cls) -> Matches:
        nothing = np.zeros(0, np.int64)
        return cls(nothing, nothing.copy(), nothing.copy())

    @classmethod
    def concat(cls, parts: list[Matches]) -> Matches:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    def unique(self) -> Matches:
        """One entry per (left, right) pair."""
        if not len(self):
            return self
        _, first = np.unique(np.stack([self.left, self.right], 1), axis=0, return_index=True)
        return Matches(self.left[first], self.right[first], self.distance[first])


_FIELDS = ("left", "right", "distance")


def self_join(codes, radius: int, chunk: int = 1 << 18) -> Matches:
    """Pairs ``left < right`` of codes within ``radius`` bits, with their distance.

    Identical codes are collapsed first (a thousand copies of one image cost one
    search) and come back as a star of distance-0 pairs onto the first row with the
    code; between distinct codes, the pair names the first row holding each. So the
    pairs have exactly the connected components of all pairs, which is what dedup
    clusters on.
    """
    codes = as_codes(codes)
    unique_codes, inverse = np.unique(codes, return_inverse=True)
    found = [
        Matches(left[keep], right[keep], distance[keep])
        for left, right, distance in _search(unique_codes, unique_codes, radius, chunk)
        for keep in [left < right]  # each unordered pair comes up from both sides
    ]
    pairs = Matches.concat(found).unique()
    return Matches.concat([_identical_pairs(inverse), _expand_unique_pairs(pairs, inverse)])


def _identical_pairs(inverse: np.ndarray) -> Matches:
    """Pairs of rows with the same code, as a star onto the group's first row."""
    order = np.argsort(inverse, kind="stable")
    groups = inverse[order]
    first_of_group = np.r_[True, groups[1:] != groups[:-1]]
    head = order[np.maximum.accumulate(np.where(first_of_group, np.arange(len(order)), 0))]
    copy = ~first_of_group
    return Matches(head[copy], order[copy], np.zeros(int(copy.sum()), np.int64))


def _expand_unique_pairs(pairs: Matches, inverse: np.ndarray) -> Matches:
    """Pairs between unique codes → pairs between the first rows holding them."""
    if not len(pairs):
        return Matches.empty()
    first_row = np.full(int(inverse.max()) + 1, -1, np.int64)
    first_row[inverse[::-1]] = np.arange(len(inverse))[::-1]
    left, right = first_row[pairs.left], first_row[pairs.right]
    return Matches(np.minimum(left, right), np.maximum(left, right), pairs.distance)


class HammingIndex:
    """A fixed set of codes (e.g. the labeled splits) to search batches of queries in.

    Small enough to ship to every Beam worker as a side input: it holds the codes
    only, and each query builds its tables (well under a second for 12,000 codes).
    """

    def __init__(self, codes, radius: int):
        self.codes = as_codes(codes).copy()
        self.radius = radius
        substrings(radius)  # validates the radius

    def __len__(self) -> int:
        return len(self.codes)

    def query(self, codes, chunk: int = 1 << 16) -> Matches:
        """(query row, index row, distance) of every index code within the radius."""
        found = [
            Matches(*arrays) for arrays in _search(as_codes(codes), self.codes, self.radius, chunk)
        ]
        return Matches.concat(found).unique()


def brute_force_self_join(codes, radius: int, start_row: int = 0, stop_row=None) -> Matches:
    """The baseline: vectorized xor + popcount of every pair. O(n²); for tests and benchmarks.

    ``start_row``/``stop_row`` scan only those left rows (to time a sample).
    """
    codes = as_codes(codes)
    block = max(1, (1 << 22) // max(len(codes), 1))  # about 32 MB of distances per step
    parts = []
    stop_row = len(codes) if stop_row is None else stop_row
    for start in range(start_row, stop_row, block):
        rows = codes[start : min(start + block, stop_row)]
        distance = np.bitwise_count(rows[:, None] ^ codes[None, :])
        left, right = np.nonzero(distance <= radius)
        left = left + start
        keep = left < right
        parts.append(
            Matches(left[keep], right[keep], distance[left[keep] - start, right[keep]].astype(int))
        )
    return Matches.concat(parts)

"""Multi-index Hamming search: exact against brute force, for every supported radius."""

import numpy as np
import pytest

from pipeline.core import hamming


def _planted(rng, n, radius):
    """Random codes plus copies of some with 1..radius+1 bits flipped (some over the radius)."""
    codes = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64)
    parts = [codes]
    for flips in range(1, radius + 2):
        copies = codes[rng.choice(n, n // 20)].copy()
        for _ in range(flips):
            copies ^= np.uint64(1) << rng.integers(0, 64, len(copies)).astype(np.uint64)
        parts.append(copies)
    return np.unique(np.concatenate(parts))


def _triples(matches):
    columns = (matches.left.tolist(), matches.right.tolist(), matches.distance.tolist())
    return set(zip(*columns, strict=True))


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 6, 8, 9, 12])
def test_self_join_and_index_equal_brute_force(radius):
    codes = _planted(np.random.default_rng(radius), 1500, radius)
    expected = _triples(hamming.brute_force_self_join(codes, radius))
    assert radius == 0 or any(d == radius for _, _, d in expected)  # pairs at the radius
    assert _triples(hamming.self_join(codes, radius)) == expected

    split = 500
    found = hamming.HammingIndex(codes[:split], radius).query(codes[split:])
    got = {(int(r), int(q) + split, int(d)) for q, r, d in zip(*vars(found).values(), strict=True)}
    assert got == {t for t in expected if t[0] < split <= t[1]}


def test_identical_codes_keep_the_components_of_all_pairs():
    codes = np.array([5, 5, 5, 7, 2**40, 5], np.uint64)  # 7 is one bit from 5
    pairs = hamming.self_join(codes, 1)
    label = list(range(len(codes)))
    for a, b in zip(pairs.left, pairs.right, strict=True):  # union by relabelling
        old, new = label[b], label[a]
        label = [new if x == old else x for x in label]
    assert len({label[i] for i in (0, 1, 2, 3, 5)}) == 1 and label[4] not in label[:4]
    found = set(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True))
    assert found >= {(0, 1), (0, 2), (0, 5)}


def test_codes_from_parquet_int64_are_read_bit_for_bit():
    signed = np.array([-1, 0], np.int64)
    assert hamming.as_codes(signed).tolist() == [2**64 - 1, 0]
    with pytest.raises(TypeError):
        hamming.as_codes(np.array([0.5]))


def test_an_unsupported_radius_is_refused():
    with pytest.raises(ValueError, match="radius"):
        hamming.HammingIndex(np.zeros(3, np.uint64), hamming.MAX_RADIUS + 1)

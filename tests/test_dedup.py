"""Dedup decisions and hashes on real photos."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.core import dedup, images, lsh, resizer, variants
from pipeline.demo_data import CAMSDD_ROOT

PERMISSIVE = resizer.FilterConfig(min_contrast=0, min_chroma=-1, min_sharpness=0)


def _codes(image: Image.Image, quality: int = 90) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    out = resizer.normalize(buffer.getvalue(), PERMISSIVE)
    return dedup.code_matrix([out.phash], [out.phash_frame])[0]


@pytest.fixture(scope="module")
def photos():
    paths = sorted(CAMSDD_ROOT.rglob("*.jpg"))[:24]
    return [images.to_rgb(images.open_image(p.read_bytes())) for p in paths]


def test_hash_level_edits_match_and_distinct_photos_do_not(photos):
    originals = np.stack([_codes(p, 95) for p in photos])
    for variant in variants.HASH_VARIANTS:
        edited = np.stack(
            [
                _codes(variants.make_variant(p, variant), variants.QUALITY.get(variant, 85))
                for p in photos
            ]
        )
        hits = dedup.hash_matches(edited, originals, dedup.DEFAULT_RADIUS)
        found = {(int(q), int(r)) for q, r in zip(hits.left, hits.right, strict=True)}
        own = {(i, i) for i in range(len(photos))}
        assert len(found & own) >= 0.95 * len(photos), variant
        assert found <= own, f"{variant}: matched another photo"
    distinct = dedup.pair_distance(originals[:, None], originals[None])
    assert (distinct[np.triu_indices(len(photos), 1)] > dedup.DEFAULT_RADIUS).all()


def test_the_frame_hash_is_what_catches_letterboxing():
    photo = images.to_rgb(images.open_image(sorted(CAMSDD_ROOT.rglob("*.jpg"))[0].read_bytes()))
    panorama = photo.resize((576, 240))  # wider than 3:2: the letterbox keeps it whole
    boxed = variants.make_variant(panorama, "letterbox_4x3")
    a, b = _codes(panorama), _codes(boxed)
    assert resizer.content_box(boxed) != (0, 0, *boxed.size)
    assert dedup.pair_distance(a, b) <= dedup.DEFAULT_RADIUS
    assert bin(int(a[0]) ^ int(b[0])).count("1") > dedup.DEFAULT_RADIUS  # 3:2 hash alone misses


@pytest.mark.parametrize(("fill", "recall"), [("letterbox_white", 0.9), ("letterbox_blur", 0.7)])
def test_white_borders_and_blurred_fills_are_looked_inside(photos, fill, recall):
    """16:9 photos squared up for social media: the 3:2 crop takes in the fill, so only
    the frame hash of the content box can match (bars only, before: blur 0 of 24)."""
    found = 0
    for photo in photos:
        wide = images.fit_to_size(photo, (640, 360))
        a, b = _codes(wide), _codes(variants.make_variant(wide, fill))
        found += dedup.pair_distance(a, b) <= dedup.DEFAULT_RADIUS
    assert found >= recall * len(photos), found


def test_the_content_box_leaves_unpadded_photos_whole(photos):
    whole = [resizer.content_box(p) == (0, 0, *p.size) for p in photos]
    assert sum(whole) >= 0.8 * len(photos)


def test_a_letterboxed_copy_does_not_beat_its_original():
    photo = images.to_rgb(images.open_image(sorted(CAMSDD_ROOT.rglob("*.jpg"))[3].read_bytes()))
    wide = images.fit_to_size(photo, (1280, 720))
    rows = []
    for key, image in (
        ("z-original", wide),
        ("a-square", variants.make_variant(wide, "letterbox_blur")),
    ):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out = resizer.normalize(buffer.getvalue(), PERMISSIVE)
        rows.append({**_row(key, out.width, out.height), "content_width": out.content_width,
                     "content_height": out.content_height})  # fmt: skip
    assert rows[1]["width"] * rows[1]["height"] > rows[0]["width"] * rows[0]["height"]
    kept = [r for r in dedup.decide_cluster(rows, {}, dedup.member_link) if r["status"] == "kept"]
    assert [r["key"] for r in kept] == ["z-original"]


def test_license_rank_prefers_open_licenses():
    names = ["CC0-1.0", "Public Domain", "CC BY 4.0", "cc-by-sa", "CC BY-NC 2.0", None, "unknown"]
    ranks = [dedup.license_rank(n) for n in names]
    assert ranks[0] == ranks[1] == 0
    assert ranks[2] < ranks[3] < ranks[4] < ranks[5] == ranks[6]


def _row(key, width, height, license_=None, phash=0):
    return {
        "key": key,
        "width": width,
        "height": height,
        "license": license_,
        "phash": phash,
        "phash_frame": phash,
        "sha256": key,
        "source_sha256": key,
    }


def test_cluster_keeps_the_largest_then_the_most_open_license():
    members = [
        _row("a", 800, 600, "CC BY-NC 2.0"),
        _row("b", 1600, 1200, "CC BY-SA 4.0"),
        _row("c", 1600, 1200, "CC0-1.0", phash=0b111),
    ]
    out = {r["key"]: r for r in dedup.decide_cluster(members, {}, dedup.member_link)}
    assert out["c"]["status"] == "kept"
    assert out["b"]["reason"] == "duplicate_of:c" and out["b"]["match_distance"] == 3
    assert out["a"]["reason"] == "duplicate_of:c"
    assert {r["cluster"] for r in out.values()} == {"a"} and out["a"]["cluster_size"] == 3


def test_a_leak_drops_its_whole_cluster_and_the_worst_split_wins():
    members = [_row("a", 1600, 1200), _row("b", 800, 600), _row("c", 640, 480)]
    matches = {
        "b": [
            ("train", dedup.Match("train/x.jpg", "phash", 2)),
            ("test", dedup.Match("test/y.jpg", "embedding", 0.03)),
        ],
    }
    out = {r["key"]: r for r in dedup.decide_cluster(members, matches, dedup.member_link)}
    assert out["b"]["reason"] == "leak:test" and out["b"]["match_key"] == "test/y.jpg"
    assert out["a"]["reason"] == out["c"]["reason"] == "leak:test"
    assert out["a"]["match_kind"] == "cluster"
    assert all(r["status"] == "dropped" for r in out.values())


def test_config_refuses_nonsense_thresholds():
    with pytest.raises(ValueError):
        dedup.DedupConfig(radius=-1)
    with pytest.raises(ValueError):
        dedup.DedupConfig(min_cosine=1.5)


def _band_collisions(signatures: np.ndarray) -> float:
    """Pairs sharing a band code, over all pairs, summed over the bands."""
    pairs = 0
    for band in signatures.T:
        _, counts = np.unique(band, return_counts=True)
        pairs += int((counts * (counts - 1) // 2).sum())
    return pairs / (len(signatures) * (len(signatures) - 1) / 2)


def test_lsh_cuts_through_the_pool_mean_so_buckets_do_not_fill():
    # Like a backbone's pooled ReLU features: non-negative, a large shared mean.
    rng = np.random.default_rng(0)
    vectors = np.maximum(rng.normal(1.0, 1.0, (2000, 128)), 0).astype(np.float32)
    copies = vectors[:100] + rng.normal(0, 0.05, (100, 128)).astype(np.float32)
    mean = vectors.mean(0)
    chance = lsh.LSH_BANDS / 2**lsh.LSH_BITS
    assert _band_collisions(lsh.lsh_signatures(vectors)) > 50 * chance  # through the origin
    assert _band_collisions(lsh.lsh_signatures(vectors, mean)) < 3 * chance
    # Near-copies still share a band with their original.
    same = lsh.lsh_signatures(vectors[:100], mean) == lsh.lsh_signatures(copies, mean)
    assert same.any(axis=1).all()
    # The Beam side: one key per band, with the pool's mean.
    row = {"key": "a", "embedding": vectors[0]}
    keys = [key for key, _ in lsh.lsh_buckets(row, mean)]
    assert keys == [
        ("emb", b, int(c)) for b, c in enumerate(lsh.lsh_signatures(vectors[:1], mean)[0])
    ]

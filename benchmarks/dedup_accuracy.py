"""Dedup accuracy on real photos: precision and recall per near-duplicate edit.

    .venv/bin/python benchmarks/dedup_accuracy.py [--radius 6] [--sweep 4,5,6,7,8,10]

Originals: the real photos of Debian's ``gcompris-qt-data`` when installed
(``apt-get install --no-install-recommends gcompris-qt-data``; about 120 distinct
photos ≥ 384 px), else the embedded demo photos. Each original gets every edit in
``pipeline.core.variants``; every edited copy goes through the real fetch resizer and
is searched against ALL originals, so a hit on another original is a false
positive. The originals include many similar photos (several monuments, fish,
landscapes), which are the hard negatives.

Rows:
* ``dedup r=R``: our two hashes (576×384 pHash and letterbox-trimmed frame pHash)
  at Hamming radius R, as ``camsdd dedup`` matches them;
* ``imagehash pHash<=10``: the baseline, plain ``imagehash.phash`` of the raw files;
* ``+ embeddings``: when ``--embeddings`` is given, cosine ≥ the dedup default on the
  teacher's embeddings added to the hash matches.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import dedup, images, resizer, variants  # noqa: E402
from pipeline.demo_data import CAMSDD_ROOT, CANDIDATES_DIR  # noqa: E402

GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")
# Bundles of drawings, puzzles or crops of other photos: not distinct originals.
SKIP_BUNDLES = {"lang", "details", "babyshapes", "gravity"}  # gravity: solar_system planets again
PERMISSIVE = resizer.FilterConfig(
    min_contrast=0, min_chroma=-1, min_sharpness=0, min_crop_width=1, min_crop_height=1
)


def load_originals(limit: int | None) -> tuple[str, list[tuple[str, Image.Image]]]:
    found: list[tuple[str, Image.Image]] = []
    if GCOMPRIS_RCC.exists():
        from pipeline.demo_data import qres

        for rcc in sorted(GCOMPRIS_RCC.glob("*.rcc")):
            if rcc.stem in SKIP_BUNDLES:
                continue
            for name, data in sorted(qres.read_qres(rcc).items()):
                if not name.lower().endswith((".jpg", ".jpeg", ".webp", ".png")):
                    continue
                if len(data) < 30000:
                    continue
                try:
                    image = images.open_image(data)
                except Exception:
                    continue
                if min(image.size) >= 384 and image.mode in ("RGB", "RGBA", "P"):
                    found.append((name, images.to_rgb(image)))
        source = "gcompris-qt-data"
    else:
        paths = sorted(CAMSDD_ROOT.rglob("*.jpg")) + sorted(
            p for p in (CANDIDATES_DIR / "images").iterdir() if p.suffix in (".jpg", ".webp")
        )
        for path in paths:
            image = images.open_image(path.read_bytes())
            if min(image.size) >= 384:
                found.append((str(path), images.to_rgb(image)))
        source = "embedded demo photos"
    # Drop exact or near-exact repeats among the originals themselves.
    distinct, seen = [], []
    for name, image in found:
        code = resizer.phash64(image)
        if all(bin(code ^ other).count("1") > 4 for other in seen):
            distinct.append((name, image))
            seen.append(code)
    return source, distinct[:limit] if limit else distinct


def encode(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def normalized(data: bytes) -> resizer.NormalizedImage:
    return resizer.normalize(data, PERMISSIVE)


def embed(model, jpegs: list[bytes]) -> np.ndarray:
    out = []
    for start in range(0, len(jpegs), 32):
        batch = np.stack([images.decode_stored(j) for j in jpegs[start : start + 32]])
        out.append(np.asarray(model(batch, training=False)))
    return dedup.normalize_rows(np.concatenate(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", default="4,5,6,7,8,10", help="radii to report")
    parser.add_argument("--limit", type=int, help="use at most this many originals")
    parser.add_argument(
        "--embeddings",
        action="store_true",
        help="also score the teacher-embedding stage (EfficientNet-Lite0; slower)",
    )
    parser.add_argument("--cosine-sweep", default="0.88,0.90,0.92,0.94,0.96")
    args = parser.parse_args()
    import imagehash

    started = time.perf_counter()
    source, originals = load_originals(args.limit)
    print(f"originals: {len(originals)} distinct photos from {source}")
    ref_codes, ref_baseline, ref_jpegs = [], [], []
    for _, image in originals:
        out = normalized(encode(image, 95))
        ref_codes.append((out.phash, out.phash_frame))
        ref_jpegs.append(out.jpeg)
        ref_baseline.append(int(str(imagehash.phash(image)), 16))
    ref = np.array(ref_codes, np.uint64)
    ref_base = np.array(ref_baseline, np.uint64)
    query_codes, query_base, query_variant, query_original, query_jpegs = [], [], [], [], []
    for index, (_, image) in enumerate(originals):
        for variant in variants.VARIANTS:
            edited = variants.make_variant(image, variant)
            data = encode(edited, variants.QUALITY.get(variant, variants.DEFAULT_QUALITY))
            out = normalized(data)
            query_codes.append((out.phash, out.phash_frame))
            query_jpegs.append(out.jpeg)
            query_base.append(int(str(imagehash.phash(Image.open(io.BytesIO(data)))), 16))
            query_variant.append(variant)
            query_original.append(index)
    queries = np.array(query_codes, np.uint64)
    distance = dedup.pair_distance(queries[:, None, :], ref[None, :, :])
    base_distance = np.bitwise_count(np.array(query_base, np.uint64)[:, None] ^ ref_base[None, :])
    query_variant = np.array(query_variant)
    own = np.zeros_like(distance, bool)
    own[np.arange(len(queries)), np.array(query_original)] = True

    def row(name: str, match: np.ndarray) -> str:
        cells = []
        for variant in variants.VARIANTS:
            rows = query_variant == variant
            tp = int((match[rows] & own[rows]).sum())
            fp = int((match[rows] & ~own[rows]).sum())
            recall = tp / rows.sum()
            precision = tp / (tp + fp) if tp + fp else 1.0
            cells.append(f"{recall:.2f} / {precision:.2f}")
        return f"| {name} | " + " | ".join(cells) + " |"

    print()
    print(
        "recall / precision per edit (queries: every edit of every original, searched "
        "against all originals)"
    )
    print("| method | " + " | ".join(variants.VARIANTS) + " |")
    print("|---" * (len(variants.VARIANTS) + 1) + "|")
    print(row("imagehash pHash<=10 (baseline)", base_distance <= 10))
    for radius in (int(r) for r in args.sweep.split(",")):
        print(row(f"dedup r={radius}", distance <= radius))
    if args.embeddings:
        from pipeline.models import teacher

        model = teacher.build_teacher()
        started_embedding = time.perf_counter()
        ref_vectors, query_vectors = embed(model, ref_jpegs), embed(model, query_jpegs)
        rate = (len(ref_jpegs) + len(query_jpegs)) / (time.perf_counter() - started_embedding)
        cosine = query_vectors @ ref_vectors.T
        for min_cosine in (float(c) for c in args.cosine_sweep.split(",")):
            print(row(f"embeddings cos>={min_cosine}", cosine >= min_cosine))
        default = dedup.DEFAULT_CONFIG
        both = (distance <= default.radius) | (cosine >= default.min_cosine)
        print(row(f"dedup r={default.radius} + embeddings cos>={default.min_cosine}", both))
        ref_cosine = ref_vectors @ ref_vectors.T
        upper_cosine = ref_cosine[np.triu_indices(len(ref), 1)]
        print()
        print(
            f"distinct originals, highest cosine: {np.sort(upper_cosine)[-5:].round(3)}; "
            f"embedding rate {rate:.1f} images/s"
        )
    distinct = dedup.pair_distance(ref[:, None, :], ref[None, :, :])
    upper = distinct[np.triu_indices(len(ref), 1)]
    print()
    print(
        f"distinct original pairs: {len(upper)}; closest at {upper.min()} bits; "
        + ", ".join(f"<= {r}: {(upper <= r).sum()}" for r in (6, 8, 10, 12))
    )
    print(f"elapsed {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

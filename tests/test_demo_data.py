"""The committed demo data keeps its promises (see pipeline/demo_data/README.md)."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

from PIL import Image

from pipeline.core import classes
from pipeline.demo_data import CAMSDD_ROOT, CANDIDATES_DIR, DEMO_DIR
from pipeline.store import camsdd_layout

from .helpers import DUMMY_DATA

ALLOWED_LICENSES = {
    "Public Domain",
    "CC0-1.0",
    "CC-BY-2.0",
    "No known copyright restrictions",
    "BSD-3-Clause (scikit-image; no image-specific license stated)",
}


def _rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_labeled_photos_are_576x384_rgb_jpegs_in_known_classes():
    scan = camsdd_layout.scan_camsdd(CAMSDD_ROOT)
    files = [f for s in scan.splits.values() for f in s.files]
    assert len(files) == 67
    for f in files:
        with Image.open(f.path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (576, 384)), f.path
    assert all(not s.ignored for s in scan.splits.values())


def test_no_photo_is_in_two_splits_or_in_the_pool():
    labeled = [p for p in CAMSDD_ROOT.rglob("*.jpg")]
    hashes = [_sha(p) for p in labeled]
    assert len(set(hashes)) == len(hashes)
    pool = {_sha(p) for p in (CANDIDATES_DIR / "images").iterdir()}
    assert not pool & set(hashes)


def test_every_file_is_attributed_with_an_allowed_license():
    rows = _rows(DEMO_DIR / "ATTRIBUTION.csv")
    attributed = {row["path"] for row in rows}
    files = {
        p.relative_to(DEMO_DIR).as_posix()
        for folder in (CAMSDD_ROOT, CANDIDATES_DIR / "images")
        for p in folder.rglob("*")
        if p.is_file()
    }
    assert attributed == files
    for row in rows:
        assert row["license"] in ALLOWED_LICENSES, row
        assert row["author"] and row["source_url"].startswith("http"), row
    gcompris = [r for r in rows if r["origin"].startswith("Debian gcompris-qt-data")]
    assert gcompris and {r["license"] for r in gcompris} <= {"Public Domain", "CC0-1.0"}
    dummy = _rows(DUMMY_DATA / "ATTRIBUTION.csv")
    assert {r["path"] for r in dummy} == {
        p.relative_to(DUMMY_DATA).as_posix() for p in DUMMY_DATA.rglob("*.jpg")
    }


def test_candidate_pool_matches_its_truth_file():
    candidates = _rows(CANDIDATES_DIR / "candidates.csv")
    truth = {row["file"]: row for row in _rows(CANDIDATES_DIR / "truth.csv")}
    on_disk = {f"images/{p.name}" for p in (CANDIDATES_DIR / "images").iterdir()}
    assert {c["file"] for c in candidates} == set(truth) == on_disk
    for c in candidates:
        classes.class_index(c["label"])  # a real class folder
    kinds = {}
    for row in truth.values():
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        if row["kind"] == "off_topic":
            assert row["true_class"] == "" and row["duplicate_of"] == ""
        else:
            classes.class_index(row["true_class"])
        if row["kind"] == "near_duplicate":
            within_pool = row["duplicate_of"].startswith("candidates/")
            original = (DEMO_DIR if within_pool else CAMSDD_ROOT) / row["duplicate_of"]
            assert original.exists(), row
            if not within_pool:
                assert original.parent.name == row["true_class"]
    assert kinds == {"on_topic": 27, "off_topic": 21, "near_duplicate": 14}
    leaks = {row["duplicate_of"].split("/")[0] for row in truth.values() if row["duplicate_of"]}
    # Leaks of every split to catch, and duplicates within the pool to cluster.
    assert leaks == {"training", "validation", "test", "candidates"}


def test_readme_states_the_coverage_the_data_has():
    readme = (DEMO_DIR / "README.md").read_text()
    scan = camsdd_layout.scan_camsdd(CAMSDD_ROOT)
    truth = _rows(CANDIDATES_DIR / "truth.csv")
    for folder in classes.CLASS_FOLDERS:
        counts = [scan.splits[s].class_counts()[folder] for s in ("train", "validation", "test")]
        pool = sum(row["true_class"] == folder for row in truth)
        row = f"| {folder} | {counts[0]} | {counts[1]} | {counts[2]} | {pool} |"
        if sum(counts) or pool:
            assert row in readme
        else:
            empty = re.search(r"\*\*Empty classes\*\*[^:]*:(.*?)\. Several", readme, re.S)
            assert folder in empty.group(1)

"""Shared fixtures: real photos from the demo data and a writable CamSDD tree."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DUMMY_DATA = REPO / "tfds_camsdd" / "camsdd" / "dummy_data"
DEMO_CAMSDD = REPO / "pipeline" / "demo_data" / "CamSDD"
#: Real 576x384 photos (CC0 / Public Domain, see ATTRIBUTION.csv).
MOUNTAIN_JPEG = DEMO_CAMSDD / "training" / "9_Mountain" / "gc_machuPicchu.jpg"
CAT_JPEG = DEMO_CAMSDD / "test" / "5_Cat" / "sk_chelsea.jpg"


@pytest.fixture
def manual_dir(tmp_path: Path) -> Path:
    """A writable copy of the builder's dummy manual dir (holds CamSDD/)."""
    target = tmp_path / "manual"
    shutil.copytree(DUMMY_DATA, target)
    return target


@pytest.fixture
def photo_bytes() -> bytes:
    return MOUNTAIN_JPEG.read_bytes()

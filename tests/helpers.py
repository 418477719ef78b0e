"""What tests share: paths to the real photos, image encoders, and command runners.

Fixtures live in conftest.py; everything importable lives here.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DUMMY_DATA = REPO / "tfds_camsdd" / "camsdd" / "dummy_data"
DEMO_CAMSDD = REPO / "pipeline" / "demo_data" / "CamSDD"
#: Real 576x384 photos (CC0 / Public Domain, see ATTRIBUTION.csv).
MOUNTAIN_JPEG = DEMO_CAMSDD / "training" / "9_Mountain" / "gc_machuPicchu.jpg"
CAT_JPEG = DEMO_CAMSDD / "test" / "5_Cat" / "sk_chelsea.jpg"
#: A large real photo (1603x1080 WebP) from the demo candidate pool.
LARGE_WEBP = REPO / "pipeline" / "demo_data" / "candidates" / "images" / "cand_005.webp"


def encode(image, fmt: str, **options) -> bytes:
    """A PIL image as bytes of ``fmt`` (``JPEG``, ``PNG`` …)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """A command as a user runs it; ``env`` values of "" unset a variable."""
    env = {**os.environ, **(env or {})}
    env = {k: v for k, v in env.items() if v}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def camsdd(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 900):
    """``camsdd ARGS`` with the venv's console script."""
    return run([str(BIN / "camsdd"), *args], cwd=cwd, env=env, timeout=timeout)


def dedup_decisions(work: str) -> list[dict]:
    """The dedup manifest's rows by key, without ``run_id``: what two runs must agree on."""
    from pipeline.store import manifest

    rows = manifest.read_stage(work, "dedup").to_pylist()
    return sorted(({k: v for k, v in r.items() if k != "run_id"} for r in rows),
                  key=lambda r: r["key"])  # fmt: skip

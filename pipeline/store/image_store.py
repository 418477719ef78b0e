"""The content-addressed image store: ``W/fetch/images/ab/<sha256>.jpg``.

Every fetched candidate's 576×384 JPEG is stored once under the sha256 of its bytes;
manifests record the path relative to the work dir. Writes are atomic and
idempotent (Beam may retry a bundle; two workers may store the same image).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.core import images
from pipeline.store import workdir


def image_path(sha256: str) -> str:
    """Content-addressed, relative to the work dir: ``fetch/images/ab/<sha256>.jpg``."""
    return f"fetch/images/{sha256[:2]}/{sha256}.jpg"


def store_image(work: str, sha256: str, jpeg: bytes) -> str:
    """Writes ``jpeg`` once under its hash; returns the path relative to ``work``.

    Raises WorkDirError when the work dir cannot take it: that stops the run (every
    later candidate would fail the same way) instead of dropping candidates.
    """
    relative = image_path(sha256)
    path = workdir.join(work, relative)
    try:
        if not workdir.exists(path):
            workdir.write_atomic(path, jpeg)
    except Exception as error:  # a full disk, an unwritable or vanished work dir
        raise workdir.unwritable(path, error) from error
    return relative


def is_stored(work: str, relative_path: str | None) -> bool:
    path = workdir.resolve(work, relative_path)
    return bool(path) and workdir.exists(path)


def read_pixels(path: str) -> np.ndarray | None:
    """A stored (or labeled) image as uint8 (384, 576, 3); None when it cannot be read."""
    try:
        return images.decode_stored(workdir.read_bytes(path))
    except (images.InvalidImageError, OSError, Image.DecompressionBombError):
        return None

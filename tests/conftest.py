"""Shared fixtures: real photos from the demo data and a writable CamSDD tree."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil
import signal
from pathlib import Path

import pytest

from tests.helpers import CAT_JPEG, DUMMY_DATA, LARGE_WEBP, MOUNTAIN_JPEG
from tests.helpers import encode as _encode

# Tests press Ctrl-C on child commands (SIGINT). A shell that starts pytest in the
# background (`make test &`) starts it with SIGINT ignored, and every child would
# inherit that and never see the key: give the children the terminal's default back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def manual_dir(tmp_path: Path) -> Path:
    """A writable copy of the builder's dummy manual dir (holds CamSDD/)."""
    target = tmp_path / "manual"
    shutil.copytree(DUMMY_DATA, target)
    return target


@pytest.fixture
def photo_bytes() -> bytes:
    return MOUNTAIN_JPEG.read_bytes()


@pytest.fixture(scope="session")
def fixture_images() -> dict[str, tuple[bytes, str]]:
    """Real photos in every shape fetch must handle: name -> (bytes, content type)."""
    import numpy as np
    from PIL import Image, ImageFilter

    photo = Image.open(LARGE_WEBP).convert("RGB")  # 1603x1080, real
    cat = Image.open(CAT_JPEG).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated 90° clockwise: viewers rotate it back
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    gray16 = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    frames = [photo.resize((600, 400)), cat.resize((600, 400))]
    animated = _encode(frames[0].convert("P"), "GIF", save_all=True, append_images=[frames[1]])
    rgba = photo.convert("RGBA")
    rgba.putalpha(200)
    jpeg = _encode(photo, "JPEG", quality=90)
    return {
        "photo.jpg": (jpeg, "image/jpeg"),
        "photo.png": (_encode(photo, "PNG"), "image/png"),
        "photo.webp": (LARGE_WEBP.read_bytes(), "image/webp"),
        "cmyk.jpg": (_encode(photo.convert("CMYK"), "JPEG", quality=90), "image/jpeg"),
        "rotated.jpg": (
            _encode(photo.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=90, exif=exif),
            "image/jpeg",
        ),
        "portrait.jpg": (_encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG"), "image/jpeg"),
        "gray16.png": (_encode(gray16, "PNG"), "image/png"),
        "alpha.png": (_encode(rgba, "PNG"), "image/png"),
        "palette.gif": (_encode(palette, "GIF"), "image/gif"),
        "animated.gif": (animated, "image/gif"),
        "tiny.jpg": (_encode(photo.resize((120, 80)), "JPEG"), "image/jpeg"),
        "panorama.jpg": (_encode(photo.resize((1600, 400)), "JPEG"), "image/jpeg"),
        "blurred.jpg": (_encode(photo.filter(ImageFilter.GaussianBlur(12)), "JPEG"), "image/jpeg"),
        "uniform.png": (_encode(Image.new("RGB", (900, 600), (120, 130, 140)), "PNG"), "image/png"),
        "grayscale.jpg": (_encode(photo.convert("L"), "JPEG"), "image/jpeg"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "image/jpeg"),
        "bomb.png": (_encode(Image.new("1", (20_000, 20_000)), "PNG"), "image/png"),
        "text.txt": (b"just some text, not an image\n" * 10, "text/plain"),
        "tiff.tif": (_encode(photo.resize((900, 600)), "TIFF"), "image/tiff"),
    }


@pytest.fixture(scope="session")
def loopback_server(fixture_images):
    from tests.loopback import LoopbackServer

    with LoopbackServer(fixture_images) as running:
        yield running


@pytest.fixture
def server(loopback_server):
    """The real HTTP server on 127.0.0.1, with its request log and fake APIs reset."""
    loopback_server.reset()
    return loopback_server


@pytest.fixture(scope="session")
def demo_tfds(tmp_path_factory) -> Path:
    """The demo CamSDD built for real (Beam) in both configs; returns the TFDS data dir.

    ``camsdd/pseudo`` gets its extra_pseudo split from the dummy pseudolabel manifest
    (2 kept real photos from the demo candidate pool, no leaks).
    """
    from pipeline.cli import demo
    from tfds_camsdd.camsdd import camsdd_dataset_builder

    data_dir = tmp_path_factory.mktemp("demo_tfds")
    previous = os.environ.get(camsdd_dataset_builder.EXTRA_MANIFEST_ENV)
    os.environ[camsdd_dataset_builder.EXTRA_MANIFEST_ENV] = str(DUMMY_DATA / "pseudolabel")
    try:
        demo.build_demo_tfds(str(data_dir), ("official", "pseudo"))
    finally:
        if previous is None:
            os.environ.pop(camsdd_dataset_builder.EXTRA_MANIFEST_ENV, None)
        else:
            os.environ[camsdd_dataset_builder.EXTRA_MANIFEST_ENV] = previous
    return data_dir

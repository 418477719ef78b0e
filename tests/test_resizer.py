"""The fetch resizer on real photos in every format and shape it must handle."""

from __future__ import annotations

import glob
import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from pipeline.core import resizer
from pipeline.core.images import InvalidImageError
from tests.helpers import DEMO_CAMSDD, encode


def _decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (576, 384))
    return image


def _hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


@pytest.mark.parametrize(
    "name", ["photo.jpg", "photo.png", "photo.webp", "cmyk.jpg", "alpha.png", "palette.gif"]
)
def test_formats_and_modes_become_the_same_576x384_photo(fixture_images, name):
    reference = resizer.normalize(fixture_images["photo.jpg"][0])
    result = resizer.normalize(fixture_images[name][0])
    _decode(result.jpeg)
    assert (result.width, result.height) == (1603, 1080)
    # Same picture whatever the container: perceptual hashes agree closely.
    assert _hamming(result.phash, reference.phash) <= 6, name
    assert result.sha256 != result.source_sha256


def test_exif_orientation_is_applied(fixture_images):
    upright = resizer.normalize(fixture_images["photo.jpg"][0])
    rotated = resizer.normalize(fixture_images["rotated.jpg"][0])
    assert (rotated.width, rotated.height) == (1603, 1080)  # as displayed, not as stored
    assert _hamming(upright.phash, rotated.phash) <= 6
    # Without the transpose the image would be sideways: far apart.
    sideways = Image.open(io.BytesIO(fixture_images["rotated.jpg"][0])).convert("RGB")
    assert _hamming(resizer.phash64(sideways), upright.phash) > 16


def test_sixteen_bit_gray_is_scaled_not_clipped(fixture_images):
    result = resizer.normalize(fixture_images["gray16.png"][0], query_class="28_Text_Documents")
    pixels = np.asarray(_decode(result.jpeg))
    assert pixels.max() > 200 and pixels.std() > 20  # not a white or black sheet


def test_animated_gif_uses_the_first_frame(fixture_images):
    result = resizer.normalize(fixture_images["animated.gif"][0])
    first = resizer.normalize(fixture_images["photo.jpg"][0])
    assert _hamming(result.phash, first.phash) <= 10


def test_reduced_decode_matches_a_full_decode(fixture_images):
    data = fixture_images["photo.jpg"][0]
    fast = np.asarray(_decode(resizer.normalize(data).jpeg), dtype=np.float32)
    full = Image.open(io.BytesIO(data)).convert("RGB")
    slow = np.asarray(
        resizer.ImageOps.fit(full, (576, 384), method=Image.Resampling.LANCZOS), dtype=np.float32
    )
    assert np.abs(fast - slow).mean() < 3.0  # DCT scaling is a good pre-filter


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("tiny.jpg", "too_small"),
        ("panorama.jpg", "extreme_aspect"),
        ("blurred.jpg", "blurry"),
        ("uniform.png", "near_uniform"),
        ("grayscale.jpg", "grayscale"),
    ],
)
def test_quality_filters_drop_with_their_reason(fixture_images, name, reason):
    with pytest.raises(resizer.FilteredImageError) as caught:
        resizer.normalize(fixture_images[name][0])
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.jpg", "corrupt"),
        ("bomb.png", "too_large"),
        ("text.txt", "not_an_image"),
        ("tiff.tif", "unsupported_format"),
    ],
)
def test_undecodable_input_has_a_reason(fixture_images, name, reason):
    with pytest.raises(InvalidImageError) as caught:
        resizer.normalize(fixture_images[name][0])
    assert caught.value.reason == reason


def test_grayscale_is_allowed_for_documents_and_qr_codes(fixture_images):
    data = fixture_images["grayscale.jpg"][0]
    assert resizer.normalize(data, query_class="29_QR_images").width == 1603
    with pytest.raises(resizer.FilteredImageError):
        resizer.normalize(data, query_class="9_Mountain")


def test_portrait_policy(fixture_images):
    data = fixture_images["portrait.jpg"][0]
    kept = resizer.normalize(data)
    assert (kept.width, kept.height) == (1080, 1603)
    _decode(kept.jpeg)
    with pytest.raises(resizer.FilteredImageError) as caught:
        resizer.normalize(data, resizer.FilterConfig(portrait="drop"))
    assert caught.value.reason == "portrait"


def test_every_real_demo_photo_passes_the_default_filters():
    """The thresholds were chosen on these: none of CamSDD-like photos may be lost."""
    paths = sorted(glob.glob(str(DEMO_CAMSDD / "*" / "*" / "*.jpg")))
    assert len(paths) == 67
    for path in paths:
        with open(path, "rb") as handle:
            resizer.normalize(handle.read(), query_class=path.split("/")[-2])


def test_phash_equals_imagehash():
    paths = sorted(glob.glob(str(DEMO_CAMSDD / "*" / "*" / "*.jpg")))[:20]
    for path in paths:
        image = Image.open(path).convert("RGB")
        assert f"{resizer.phash64(image):016x}" == str(imagehash.phash(image)), path


@pytest.mark.parametrize("saturation", [0.10, 0.20])
def test_low_saturation_colour_photos_are_not_grayscale(saturation):
    """A white room or a foggy beach in colour is a real CamSDD photo; true gray is not."""
    from PIL import ImageEnhance

    photos = sorted(DEMO_CAMSDD.rglob("*.jpg"))
    colour = [p for p in photos if p.parent.name not in resizer.FilterConfig().grayscale_classes]
    for path in colour:
        photo = Image.open(path).convert("RGB")
        faded = ImageEnhance.Color(photo).enhance(saturation)
        kept = resizer.normalize(encode(faded, "JPEG", quality=90))
        assert kept.metrics["chroma"] >= resizer.FilterConfig().min_chroma, path.name
        with pytest.raises(resizer.FilteredImageError) as dropped:
            resizer.normalize(encode(photo.convert("L").convert("RGB"), "JPEG", quality=90))
        assert dropped.value.reason == "grayscale"

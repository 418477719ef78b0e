"""check_camsdd_image on real photos in every shape a CamSDD folder may hold."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.core import images

from .helpers import CAT_JPEG


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture
def photo(photo_bytes) -> Image.Image:
    return _decoded(photo_bytes)


def test_conformant_jpeg_is_kept_byte_for_byte(photo_bytes):
    checked = images.check_camsdd_image(photo_bytes)
    assert checked.jpeg == photo_bytes
    assert checked.repairs == ()


def _assert_camsdd_jpeg(data: bytes) -> Image.Image:
    image = _decoded(data)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (576, 384))
    return image


def test_png_content_is_reencoded_as_jpeg(photo):
    checked = images.check_camsdd_image(_encode(photo, "PNG"))
    assert checked.repairs == ("not_jpeg:PNG",)
    out = _assert_camsdd_jpeg(checked.jpeg)
    # Same picture: mean absolute error of one JPEG generation.
    assert np.abs(np.asarray(out, float) - np.asarray(photo, float)).mean() < 4


def test_webp_and_grayscale_are_repaired(photo):
    assert images.check_camsdd_image(_encode(photo, "WEBP")).repairs == ("not_jpeg:WEBP",)
    checked = images.check_camsdd_image(_encode(photo.convert("L"), "JPEG"))
    assert checked.repairs == ("not_rgb:L",)
    out = np.asarray(_assert_camsdd_jpeg(checked.jpeg), int)
    assert np.abs(out[..., 0] - out[..., 1]).max() <= 8  # still gray, now 3 channels


def test_cmyk_jpeg_becomes_rgb(photo):
    checked = images.check_camsdd_image(_encode(photo.convert("CMYK"), "JPEG"))
    assert checked.repairs == ("not_rgb:CMYK",)
    out = _assert_camsdd_jpeg(checked.jpeg)
    assert np.abs(np.asarray(out, float) - np.asarray(photo, float)).mean() < 8


def test_other_sizes_are_center_cropped_to_3_2_then_resized():
    cat = _decoded(CAT_JPEG.read_bytes())
    big = cat.resize((864, 576))  # 3:2, larger
    checked = images.check_camsdd_image(_encode(big, "JPEG", quality=95))
    assert checked.repairs == ("wrong_size:864x576",)
    _assert_camsdd_jpeg(checked.jpeg)

    # A portrait frame: a centered band is kept, the rest cropped away.
    portrait = Image.new("RGB", (384, 576), (0, 0, 255))
    portrait.paste((255, 0, 0), (0, 160, 384, 416))  # red band in the middle third
    checked = images.check_camsdd_image(_encode(portrait, "JPEG", quality=95))
    assert checked.repairs == ("wrong_size:384x576",)
    out = np.asarray(_assert_camsdd_jpeg(checked.jpeg), int)
    assert out[192, 288, 0] > 200 and out[192, 288, 2] < 60  # center is red


def test_alpha_is_flattened_on_white(photo):
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 100, 100))  # fully transparent corner
    checked = images.check_camsdd_image(_encode(rgba, "PNG"))
    assert "not_rgb:RGBA" in checked.repairs
    out = np.asarray(_assert_camsdd_jpeg(checked.jpeg), int)
    assert out[10:90, 10:90].min() >= 245  # white, not black


def test_16_bit_grayscale_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 576, dtype=np.uint16), (384, 1))
    checked = images.check_camsdd_image(_encode(Image.fromarray(ramp), "PNG"))
    assert checked.repairs[0] == "not_jpeg:PNG"
    out = np.asarray(_decoded(checked.jpeg), int)[..., 0]
    assert out[:, 288].mean() == pytest.approx(128, abs=4)  # mid-gray, not 255
    assert out[:, -1].mean() > 245


def test_exif_orientation_is_applied_when_repairing():
    left_red = Image.new("RGB", (600, 400), (0, 0, 255))
    left_red.paste((255, 0, 0), (0, 0, 300, 400))
    exif = Image.Exif()
    exif[0x0112] = 3  # rotate 180: the viewer sees red on the right
    checked = images.check_camsdd_image(_encode(left_red, "JPEG", exif=exif, quality=95))
    out = np.asarray(_decoded(checked.jpeg), int)
    assert out[192, 500, 0] > 200 and out[192, 50, 2] > 200


@pytest.mark.parametrize("keep", [0.5, -200])  # half the file, or all but its tail
def test_truncated_jpeg_is_corrupt(photo_bytes, keep):
    cut = int(len(photo_bytes) * keep) if keep > 0 else len(photo_bytes) + keep
    with pytest.raises(images.InvalidImageError) as error:
        images.check_camsdd_image(photo_bytes[:cut])
    assert error.value.reason == "corrupt"
    assert "truncated" in str(error.value)


@pytest.mark.parametrize(
    "data", [b"", b"<html><body>404 Not Found</body></html>", bytes(range(256)) * 40]
)
def test_non_images_are_refused(data):
    with pytest.raises(images.InvalidImageError) as error:
        images.check_camsdd_image(data)
    assert error.value.reason == "not_an_image"
    assert f"{len(data):,} bytes" in str(error.value)
    # Says what it is in words, never quotes the bytes (a local file may be anything).
    assert (b"html" in data) == ("HTML" in str(error.value))
    assert not data or repr(data[:8])[2:-1] not in str(error.value)


def test_pixel_limit_is_checked_before_decoding(photo_bytes):
    with pytest.raises(images.InvalidImageError) as error:
        images.open_image(photo_bytes, max_pixels=576 * 384 - 1)
    assert error.value.reason == "too_large"
    assert "576x384" in str(error.value)

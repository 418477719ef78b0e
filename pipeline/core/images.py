"""Decode, check and normalise images to CamSDD's 576×384 RGB JPEG, on bytes.

Pure functions: bytes in, bytes out, no IO. The TFDS builder calls
:func:`check_camsdd_image` on every labeled file; later stages reuse the
helpers. CamSDD images are landscape, width 576 and height 384.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageOps

from pipeline.core.errors import RecordError

TARGET_WIDTH = 576
TARGET_HEIGHT = 384
TARGET_SIZE = (TARGET_WIDTH, TARGET_HEIGHT)  # PIL order: (width, height)
JPEG_QUALITY = 95

#: Refuse to decode more pixels than this (a 12,000 x 8,000 photo fits). It
#: bounds the memory one record can take, whatever its header claims.
MAX_PIXELS = 100_000_000


class InvalidImageError(RecordError, ValueError):
    """Bytes that cannot be turned into an image.

    ``reason`` is a short stable code for reports and counters
    (``not_an_image``, ``corrupt``, ``too_large``); the message explains it.
    """


@dataclasses.dataclass(frozen=True)
class CheckedImage:
    """A CamSDD-conformant image.

    Attributes:
      jpeg: 576×384 RGB JPEG bytes.
      repairs: what had to change, e.g. ``("wrong_size:640x427",)``; empty when
        ``jpeg`` is the original bytes, untouched.
    """

    jpeg: bytes
    repairs: tuple[str, ...] = ()


def open_header(data: bytes, max_pixels: int) -> Image.Image:
    """Reads the header only: format, mode and size; no pixels decoded yet."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise InvalidImageError("too_large", str(error)) from error
    except Exception as error:  # PIL raises many types for unknown bytes.
        # Never quote the bytes: a folder source may point at any file on the machine.
        raise InvalidImageError(
            "not_an_image",
            f"{len(data):,} bytes of {describe_bytes(data)}, no image format known to PIL",
        ) from error
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImageError(
            "too_large", f"{width}x{height} is over the {max_pixels:,}-pixel limit"
        )
    return image


def describe_bytes(head: bytes) -> str:
    """What bytes look like, in words (never the bytes themselves)."""
    text = head[:64].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "an HTML/XML page"
    if text.startswith((b"{", b"[")):
        return "JSON"
    return "no known kind" if head else "nothing"


def decode_pixels(image: Image.Image, reduce: int = 1) -> Image.Image:
    """Decodes the pixels; JPEGs at 1/``reduce`` scale when ``reduce`` > 1.

    A reduced (DCT-scaled) JPEG decode still reads the whole bitstream, so a
    truncated or damaged file fails here all the same, in about half the time.
    """
    if reduce > 1 and image.format == "JPEG":
        image.draft(image.mode, (image.width // reduce, image.height // reduce))
    try:
        image.load()
    except Exception as error:  # Truncated or corrupt pixel data.
        raise InvalidImageError("corrupt", f"{image.format} data is damaged ({error})") from error
    return image


def open_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Opens and fully decodes ``data``.

    Raises:
      InvalidImageError: unknown format, truncated or corrupt data, or more
        than ``max_pixels`` pixels.
    """
    return decode_pixels(open_header(data, max_pixels))


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB.

    Transparency is flattened onto white; 16- and 32-bit grayscale is scaled to
    8 bits rather than clipped; CMYK goes through PIL's conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.uint32)
        bits = 16 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 8
        gray = (pixels >> (bits - 8)).clip(0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "F":
        gray = np.asarray(image, dtype=np.float32).clip(0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def fit_to_size(image: Image.Image, size: tuple[int, int] = TARGET_SIZE) -> Image.Image:
    """Center-crops ``image`` to the aspect ratio of ``size``, then resizes to it.

    LANCZOS downscaling; no padding, so nothing but the photo ends up in the frame.
    """
    if image.size == size:
        return image
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """Encodes an RGB image as baseline JPEG (no EXIF or other metadata)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_stored(data: bytes) -> np.ndarray:
    """Stored JPEG bytes → uint8 (384, 576, 3), fitting anything else to 576×384."""
    image = to_rgb(open_image(data))
    if image.size != TARGET_SIZE:
        image = fit_to_size(image)
    return np.asarray(image, np.uint8)


def check_camsdd_image(data: bytes) -> CheckedImage:
    """Checks one labeled image and repairs what can be repaired.

    A decodable 576×384 RGB JPEG is returned byte for byte. Anything else that
    decodes (another size, grayscale/CMYK/alpha, PNG or WebP content) is
    EXIF-transposed, converted to RGB, center-cropped to 3:2, resized to 576×384
    and re-encoded as JPEG (quality 95); ``repairs`` lists why.

    Raises:
      InvalidImageError: the bytes are not an image, are truncated or corrupt,
        or are too large to decode.
    """
    image = open_header(data, MAX_PIXELS)
    repairs = []
    if image.format != "JPEG":
        repairs.append(f"not_jpeg:{image.format or 'unknown'}")
    if image.mode != "RGB":
        repairs.append(f"not_rgb:{image.mode}")
    if image.size != TARGET_SIZE:
        repairs.append(f"wrong_size:{image.size[0]}x{image.size[1]}")
    if not repairs:
        decode_pixels(image, reduce=8)  # only proves the data is whole: pixels unused
        return CheckedImage(jpeg=data)
    fixed = fit_to_size(to_rgb(ImageOps.exif_transpose(decode_pixels(image))))
    return CheckedImage(jpeg=encode_jpeg(fixed), repairs=tuple(repairs))

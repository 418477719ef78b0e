"""The fetch stage's resizer: candidate bytes in, a 576×384 JPEG and its hashes out.

A pure function on bytes (as img2dataset's resizer): no IO, no Beam.

1. Read the header only: format, size, EXIF orientation. Refuse unknown
   formats, decompression bombs, and images that fail the size filters before
   any pixel is decoded.
2. Decode JPEGs at reduced scale (libjpeg DCT scaling via ``draft``) to the
   smallest size that still covers the 576×384 crop: a 12-megapixel photo is
   decoded at 1/4 or 1/8 scale, which is where the speed comes from.
3. Transpose by EXIF, convert to RGB (CMYK, 16-bit, alpha, palette), center-crop
   to 3:2 and resize to 576×384 with LANCZOS; encode JPEG quality 95.
4. Measure colourfulness, contrast and sharpness on the result (at 288×192, so
   upscaled small images are not judged by their upscaling blur) and apply the
   quality filters.
5. sha256 of the source bytes and of the JPEG; two 64-bit DCT perceptual hashes
   (the same bits as ``imagehash.phash``): of the 576×384 pixels, and of the
   whole frame with letterbox bars trimmed (a letterboxed copy crops to a
   different 3:2 window, so only the frame hash still matches). Dedup never
   decodes again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
from PIL import Image, ImageOps

from pipeline import images
from pipeline.errors import RecordError
from pipeline.images import TARGET_HEIGHT, TARGET_SIZE, TARGET_WIDTH, InvalidImageError

#: Formats fetch accepts (MPO is a multi-picture JPEG from phone cameras).
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF")
PORTRAIT_POLICIES = ("crop", "drop")
_EXIF_ORIENTATION = 0x0112


class FilteredImageError(RecordError, ValueError):
    """An image that decodes but fails a quality filter; ``reason`` names the filter."""

    def __init__(self, reason: str, detail: str, metrics: dict[str, float] | None = None):
        super().__init__(reason, detail)
        self.metrics = metrics or {}


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Quality filters for fetched candidates (see the README's fetch section).

    Attributes:
      min_crop_width, min_crop_height: the 3:2 crop taken from the image must be
        at least this big; the default (half of 576×384) allows at most a 2×
        upscale.
      max_aspect: longer side over shorter side; panoramas and banners beyond it
        are dropped (a 3:2 crop would keep too little of them).
      portrait: ``crop`` keeps the centre 3:2 band of a portrait image; ``drop``
        drops portraits (CamSDD's frames are all landscape).
      min_colorfulness: mean absolute difference between colour channels (0-255)
        at or under which an image counts as grayscale.
      min_contrast: standard deviation of luminance under which an image is
        near-uniform (blank, a flat colour, a lens cap).
      min_sharpness: variance of the Laplacian at 288×192 under which an image
        is heavily blurred.
      grayscale_classes: queried classes exempt from the grayscale filter
        (documents and QR codes are often black and white).
      smooth_classes: queried classes exempt from the blur filter (a clear sky
        has no edges).
      max_pixels: decompression-bomb limit on the header's width × height.
    """

    min_crop_width: int = TARGET_WIDTH // 2
    min_crop_height: int = TARGET_HEIGHT // 2
    max_aspect: float = 2.5
    portrait: str = "crop"
    min_colorfulness: float = 3.0
    min_contrast: float = 8.0
    min_sharpness: float = 20.0
    grayscale_classes: tuple[str, ...] = ("28_Text_Documents", "29_QR_images")
    smooth_classes: tuple[str, ...] = ("16_Blue_Sky", "17_Cloudy_Sky")
    max_pixels: int = images.MAX_PIXELS

    def __post_init__(self) -> None:
        if self.portrait not in PORTRAIT_POLICIES:
            raise ValueError(f"portrait policy must be one of {PORTRAIT_POLICIES}")


@dataclasses.dataclass(frozen=True)
class NormalizedImage:
    """A candidate resized to 576×384 JPEG, with what dedup and reports need."""

    jpeg: bytes
    sha256: str  # of ``jpeg``: names the file in the content-addressed store
    source_sha256: str  # of the bytes as downloaded
    phash: int  # 64-bit DCT hash of the 576×384 pixels, unsigned
    phash_frame: int  # the same hash of the whole frame, letterbox bars trimmed
    width: int  # source size, after EXIF orientation
    height: int
    format: str
    mode: str
    metrics: dict[str, float]


def dct_matrix(size: int) -> np.ndarray:
    """The unnormalised DCT-II matrix (as ``scipy.fftpack.dct``, type 2)."""
    n = np.arange(size)
    return 2.0 * np.cos(np.pi * np.outer(n, 2 * n + 1) / (2 * size))


_DCT32 = dct_matrix(32)


def phash64(image: Image.Image) -> int:
    """64-bit perceptual hash: imagehash.phash's algorithm (32×32 LANCZOS, DCT, 8×8 > median).

    Bits are row-major, first bit most significant, so ``f"{h:016x}"`` equals
    ``str(imagehash.phash(image))``.
    """
    small = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float64)
    low = (_DCT32 @ small @ _DCT32.T)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _bar_length(std: np.ndarray, mean: np.ndarray, min_bar: float) -> int:
    """Rows (or columns) from the start that form one flat bar of one colour."""
    limit = int(len(std) * 0.4)
    length = 0
    while length < limit and std[length] < 3.0 and abs(mean[length] - mean[0]) < 4.0:
        length += 1
    return length if length >= len(std) * min_bar else 0


def letterbox_box(image: Image.Image, min_bar: float = 0.02) -> tuple[int, int, int, int]:
    """The box inside uniform bars (letterbox/pillarbox) at the image's edges.

    A bar is at least ``min_bar`` of the side, flat (row std < 3 grey levels) and
    of one colour; at most 40% of each side is trimmed.
    """
    small = image.convert("L")
    small.thumbnail((256, 256))
    gray = np.asarray(small, np.float32)
    rows, cols = (gray.std(1), gray.mean(1)), (gray.std(0), gray.mean(0))
    top, bottom = _bar_length(*rows, min_bar), _bar_length(*(v[::-1] for v in rows), min_bar)
    left, right = _bar_length(*cols, min_bar), _bar_length(*(v[::-1] for v in cols), min_bar)
    sx, sy = image.width / small.width, image.height / small.height
    return (
        round(left * sx),
        round(top * sy),
        round((small.width - right) * sx),
        round((small.height - bottom) * sy),
    )


def frame_phash64(image: Image.Image) -> int:
    """``phash64`` of the whole frame inside any letterbox bars."""
    box = letterbox_box(image)
    return phash64(image if box == (0, 0, *image.size) else image.crop(box))


def quality_metrics(image: Image.Image) -> dict[str, float]:
    """Colourfulness, contrast and sharpness of an RGB image, measured at 288×192."""
    half = image.reduce(2) if image.size == TARGET_SIZE else image
    rgb = np.asarray(half, dtype=np.float32)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    colorfulness = float(
        (np.abs(red - green).mean() + np.abs(green - blue).mean() + np.abs(red - blue).mean()) / 3
    )
    gray = 0.299 * red + 0.587 * green + 0.114 * blue
    laplacian = (
        gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
    )
    return {
        "colorfulness": round(colorfulness, 3),
        "contrast": round(float(gray.std()), 3),
        "sharpness": round(float(laplacian.var()), 3),
    }


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block must not lose the image
        return 1


def crop_box_size(width: int, height: int) -> tuple[float, float]:
    """Size of the largest centred 3:2 (landscape) box inside ``width`` × ``height``."""
    target_ratio = TARGET_WIDTH / TARGET_HEIGHT
    if width / height >= target_ratio:
        return height * target_ratio, float(height)
    return float(width), width / target_ratio


def check_geometry(width: int, height: int, config: FilterConfig) -> None:
    """Size filters on the (EXIF-oriented) source size; raises FilteredImageError."""
    aspect = max(width, height) / max(min(width, height), 1)
    if aspect > config.max_aspect:
        raise FilteredImageError(
            "extreme_aspect", f"{width}x{height} is {aspect:.2f}:1, over {config.max_aspect}:1"
        )
    if height > width and config.portrait == "drop":
        raise FilteredImageError("portrait", f"{width}x{height} is portrait (policy: drop)")
    crop_width, crop_height = crop_box_size(width, height)
    if crop_width < config.min_crop_width - 0.5 or crop_height < config.min_crop_height - 0.5:
        raise FilteredImageError(
            "too_small",
            f"{width}x{height} gives a {crop_width:.0f}x{crop_height:.0f} 3:2 crop, under "
            f"{config.min_crop_width}x{config.min_crop_height}",
        )


def normalize(
    data: bytes, config: FilterConfig = FilterConfig(), query_class: str | None = None
) -> NormalizedImage:
    """Turns candidate bytes into a 576×384 JPEG, or raises with a reason.

    Raises:
      InvalidImageError: ``not_an_image``, ``unsupported_format``, ``too_large``
        (decompression bomb) or ``corrupt``.
      FilteredImageError: ``too_small``, ``extreme_aspect``, ``portrait``,
        ``grayscale``, ``near_uniform`` or ``blurry``.
    """
    image = images.open_header(data, config.max_pixels)
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidImageError(
            "unsupported_format", f"{image.format} is not one of {', '.join(ACCEPTED_FORMATS)}"
        )
    source_format, source_mode = image.format, image.mode
    orientation = _orientation(image)
    swapped = orientation in (5, 6, 7, 8)
    width, height = (image.height, image.width) if swapped else image.size
    check_geometry(width, height, config)

    if image.format in ("JPEG", "MPO"):
        crop_width, crop_height = crop_box_size(width, height)
        scale = min(1.0, max(TARGET_WIDTH / crop_width, TARGET_HEIGHT / crop_height))
        wanted = (math.ceil(width * scale), math.ceil(height * scale))
        image.draft(image.mode, (wanted[1], wanted[0]) if swapped else wanted)
    image = images.decode_pixels(image)
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    rgb = images.to_rgb(image)
    fitted = ImageOps.fit(rgb, TARGET_SIZE, method=Image.Resampling.LANCZOS)

    metrics = quality_metrics(fitted)
    if metrics["contrast"] < config.min_contrast:
        raise FilteredImageError(
            "near_uniform",
            f"luminance std {metrics['contrast']:.1f} < {config.min_contrast}",
            metrics,
        )
    if (
        metrics["colorfulness"] <= config.min_colorfulness
        and query_class not in config.grayscale_classes
    ):
        raise FilteredImageError(
            "grayscale",
            f"colourfulness {metrics['colorfulness']:.1f} <= {config.min_colorfulness}",
            metrics,
        )
    if metrics["sharpness"] < config.min_sharpness and query_class not in config.smooth_classes:
        raise FilteredImageError(
            "blurry",
            f"Laplacian variance {metrics['sharpness']:.1f} < {config.min_sharpness}",
            metrics,
        )
    jpeg = images.encode_jpeg(fitted)
    return NormalizedImage(
        jpeg=jpeg,
        sha256=hashlib.sha256(jpeg).hexdigest(),
        source_sha256=hashlib.sha256(data).hexdigest(),
        phash=phash64(fitted),
        phash_frame=frame_phash64(rgb),
        width=width,
        height=height,
        format=source_format,
        mode=source_mode,
        metrics=metrics,
    )

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
   photo inside any letterbox: flat bars or a blurred fill trimmed (a letterboxed copy crops to a
   different 3:2 window, so only the frame hash still matches). Dedup never
   decodes again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
from PIL import Image, ImageOps

from pipeline.core import images
from pipeline.core.errors import RecordError
from pipeline.core.images import TARGET_HEIGHT, TARGET_SIZE, TARGET_WIDTH, InvalidImageError

#: Formats fetch accepts (MPO is a multi-picture JPEG from phone cameras).
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF")
PORTRAIT_POLICIES = ("crop", "drop")
_EXIF_ORIENTATION = 0x0112


class FilteredImageError(RecordError, ValueError):
    """An image that fails a filter; ``reason`` names the filter.

    ``fields`` holds what was measured (source size, quality metrics), so a later run
    with other thresholds can decide again without downloading. ``image`` is the
    normalized image when the pixels were decoded (quality filters): fetch stores it,
    so a looser threshold on a rerun keeps it with no download either.
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        fields: dict[str, float] | None = None,
        image: NormalizedImage | None = None,
    ):
        super().__init__(reason, detail)
        self.fields = fields or {}
        self.image = image


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
      min_chroma: an image whose chroma (99th percentile of the per-pixel distance
        from gray, max(|Cb − 128|, |Cr − 128|), at 288×192) is under this is
        grayscale. True grayscale is 0 (JPEG keeps gray exactly gray); colour photos
        desaturated to 10% still measure 3 or more.
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
    min_chroma: float = 2.0
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
    phash_frame: int  # the same hash of the photo inside any letterbox bars or fill
    width: int  # source size, after EXIF orientation
    height: int
    content_width: int  # the photo inside any letterbox, in source pixels
    content_height: int
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


#: Bars and fills are trimmed up to this share of a side, and must be at least MIN_BAR.
MAX_BAR, MIN_BAR = 0.4, 0.02


def _flat_bars(gray: np.ndarray) -> tuple[int, int]:
    """Rows at the start and at the end that form flat bars of one colour (0: none)."""

    def run(std: np.ndarray, mean: np.ndarray) -> int:
        limit, length = int(len(std) * MAX_BAR), 0
        while length < limit and std[length] < 3.0 and abs(mean[length] - mean[0]) < 4.0:
            length += 1
        return length if length >= len(std) * MIN_BAR else 0

    std, mean = gray.std(1), gray.mean(1)
    return run(std, mean), run(std[::-1], mean[::-1])


def _fill_bands(gray: np.ndarray, tolerance: float = 0.02) -> tuple[int, int]:
    """Matching bands at the start and end around a pasted photo (0, 0: none).

    The social-media square: the photo pasted in the middle of a blurred, enlarged copy
    of itself. Found by its two paste edges, straight steps across at least half the
    width at equal distances from the two ends, around bands with less than half the
    detail of the photo between them.
    """
    n = len(gray)
    limit, shortest = int(n * MAX_BAR), max(2, int(np.ceil(n * MIN_BAR)))
    if limit <= shortest:
        return 0, 0
    # edge[r]: share of columns stepping by more than 12 grey levels around row r.
    edge = np.r_[0.0, (np.abs(gray[2:] - gray[:-2]) > 12).mean(1), 0.0]
    slack = max(2, int(n * tolerance))
    best, strength = (0, 0), 0.0
    for top in range(shortest, limit):
        bottoms = np.arange(max(shortest, top - slack), min(limit, top + slack) + 1)
        both = np.minimum(edge[top], edge[n - bottoms])
        k = int(np.argmax(both))
        if both[k] > strength:
            best, strength = (top, int(bottoms[k])), float(both[k])
    top, bottom = best
    if strength < 0.5:
        return 0, 0
    detail = np.abs(np.diff(gray, axis=1)).mean(1)
    inside = detail[top : n - bottom].mean()
    outside = np.r_[detail[:top], detail[n - bottom :]].mean()
    return best if outside <= 0.5 * inside else (0, 0)


def content_box(image: Image.Image) -> tuple[int, int, int, int]:
    """The box of the photo inside any letterbox: flat bars, or a blurred-copy fill.

    Flat bars (any one colour: black, white, a tint) are trimmed first; only a frame
    with none is searched for a fill (a blurred enlarged copy around the photo).
    """
    small = image.convert("L")
    small.thumbnail((384, 384))
    gray = np.asarray(small, np.float32)
    (top, bottom), (left, right) = _flat_bars(gray), _flat_bars(gray.T)
    if not any((top, bottom, left, right)):
        (top, bottom), (left, right) = _fill_bands(gray), _fill_bands(gray.T)
    sx, sy = image.width / small.width, image.height / small.height
    return (
        round(left * sx),
        round(top * sy),
        round((small.width - right) * sx),
        round((small.height - bottom) * sy),
    )


def frame_phash64(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> int:
    """``phash64`` of the photo inside any letterbox (``content_box``)."""
    box = box or content_box(image)
    return phash64(image if box == (0, 0, *image.size) else image.crop(box))


#: What ``quality_metrics`` measures (the fetch manifest stores each).
METRIC_NAMES = ("colorfulness", "chroma", "contrast", "sharpness")


def quality_metrics(image: Image.Image) -> dict[str, float]:
    """Colourfulness, chroma, contrast and sharpness of an RGB image, measured at 288×192."""
    half = image.reduce(2) if image.size == TARGET_SIZE else image
    rgb = np.asarray(half, dtype=np.float32)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    colorfulness = float(
        (np.abs(red - green).mean() + np.abs(green - blue).mean() + np.abs(red - blue).mean()) / 3
    )
    ycbcr = np.asarray(half.convert("YCbCr"), dtype=np.float32)
    chroma = np.maximum(np.abs(ycbcr[..., 1] - 128), np.abs(ycbcr[..., 2] - 128))
    gray = 0.299 * red + 0.587 * green + 0.114 * blue
    laplacian = (
        gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
    )
    return {
        "colorfulness": round(colorfulness, 3),
        "chroma": round(float(np.percentile(chroma, 99)), 3),
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
    size = {"width": width, "height": height}
    aspect = max(width, height) / max(min(width, height), 1)
    if aspect > config.max_aspect:
        raise FilteredImageError(
            "extreme_aspect",
            f"{width}x{height} is {aspect:.2f}:1, over {config.max_aspect}:1",
            size,
        )
    if height > width and config.portrait == "drop":
        raise FilteredImageError("portrait", f"{width}x{height} is portrait (policy: drop)", size)
    crop_width, crop_height = crop_box_size(width, height)
    if crop_width < config.min_crop_width - 0.5 or crop_height < config.min_crop_height - 0.5:
        raise FilteredImageError(
            "too_small",
            f"{width}x{height} gives a {crop_width:.0f}x{crop_height:.0f} 3:2 crop, under "
            f"{config.min_crop_width}x{config.min_crop_height}",
            size,
        )


def quality_verdict(
    metrics: dict[str, float], config: FilterConfig, query_class: str | None = None
) -> FilteredImageError | None:
    """The first quality filter ``metrics`` fail, or None when they pass."""
    if metrics["contrast"] < config.min_contrast:
        return FilteredImageError(
            "near_uniform", f"luminance std {metrics['contrast']:.1f} < {config.min_contrast}"
        )
    if metrics["chroma"] < config.min_chroma and query_class not in config.grayscale_classes:
        return FilteredImageError(
            "grayscale", f"chroma {metrics['chroma']:.1f} < {config.min_chroma}"
        )
    if metrics["sharpness"] < config.min_sharpness and query_class not in config.smooth_classes:
        return FilteredImageError(
            "blurry", f"Laplacian variance {metrics['sharpness']:.1f} < {config.min_sharpness}"
        )
    return None


#: Drop reasons of the filters: decided from stored measurements, so a rerun with other
#: thresholds decides again without downloading.
FILTER_REASONS = frozenset(
    {"too_small", "extreme_aspect", "portrait", "near_uniform", "grayscale", "blurry"}
)


def decide_again(
    width: int,
    height: int,
    metrics: dict[str, float] | None,
    config: FilterConfig,
    query_class: str | None = None,
) -> FilteredImageError | None:
    """Every filter on stored measurements: the failing one, or None (all pass).

    ``metrics`` is None for an image dropped before it was decoded: the geometry
    decides, and an image that now passes it needs fetching again.
    """
    try:
        check_geometry(width, height, config)
    except FilteredImageError as error:
        return error
    return quality_verdict(metrics, config, query_class) if metrics else None


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
    verdict = quality_verdict(metrics, config, query_class)
    jpeg = images.encode_jpeg(fitted)
    box = content_box(rgb)
    # The box in source pixels (rgb may be a reduced decode): what the keeper compares.
    scale = width / rgb.width
    normalized = NormalizedImage(
        jpeg=jpeg,
        sha256=hashlib.sha256(jpeg).hexdigest(),
        source_sha256=hashlib.sha256(data).hexdigest(),
        phash=phash64(fitted),
        phash_frame=frame_phash64(rgb, box),
        width=width,
        height=height,
        content_width=round((box[2] - box[0]) * scale),
        content_height=round((box[3] - box[1]) * scale),
        format=source_format,
        mode=source_mode,
        metrics=metrics,
    )
    if verdict is not None:
        verdict.fields = {"width": width, "height": height, **metrics}
        verdict.image = normalized
        raise verdict
    return normalized

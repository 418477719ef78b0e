"""Near-duplicate edits of a photo: the variants dedup must (or may) catch.

Used to plant near-duplicates in the demo pool, by the dedup accuracy benchmark
and by the tests. Each edit is what happens to real web images: re-encodes,
resizes, crops, colour edits, captions, letterboxing, rotation, mirroring.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from pipeline.core import images

#: Edits a perceptual hash should survive (the recall target applies to these).
HASH_VARIANTS = (
    "jpeg_q50",
    "downscale_640",
    "downscale_half",
    "fit_576x384",
    "brightness_contrast",
    "letterbox_4x3",
)
#: Photos padded to a square the social-media way: white borders, a blurred fill.
PADDED_VARIANTS = ("letterbox_white", "letterbox_blur")
#: Harder edits, reported honestly; the embedding stage is for these.
HARD_VARIANTS = ("crop_85", "crop_90", "text_overlay", "rotate_3", "flip")
VARIANTS = HASH_VARIANTS + PADDED_VARIANTS + HARD_VARIANTS
#: JPEG quality each variant is saved at (the re-encode is its own edit).
QUALITY = {"jpeg_q50": 50}
DEFAULT_QUALITY = 85


def font(size: int) -> ImageFont.ImageFont:
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _crop(image: Image.Image, area: float) -> Image.Image:
    w, h = image.size
    scale = area**0.5
    cw, ch = round(w * scale), round(h * scale)
    left, top = (w - cw) // 3, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def make_variant(image: Image.Image, variant: str) -> Image.Image:
    """A near-duplicate edit of ``image`` (RGB out)."""
    image = images.to_rgb(image)
    w, h = image.size
    if variant == "jpeg_q50":  # the edit is the re-encode itself
        return image
    if variant == "downscale_640":
        return image.resize((640, round(640 * h / w)), Image.Resampling.BILINEAR)
    if variant == "downscale_half":
        return image.reduce(2)
    if variant == "fit_576x384":
        return images.fit_to_size(image)
    if variant in ("crop_85", "crop_90"):
        return _crop(image, int(variant[-2:]) / 100)
    if variant == "brightness_contrast":
        return ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(1.2)).enhance(1.15)
    if variant == "letterbox_4x3":
        height = round(w * 3 / 4)
        canvas = Image.new("RGB", (w, max(height, h)), (0, 0, 0))
        canvas.paste(image, (0, (canvas.height - h) // 2))
        return canvas
    if variant == "letterbox_white":  # white borders all round, on a square canvas
        side = round(max(w, h) * 1.08)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        return canvas
    if variant == "letterbox_blur":  # the social-media square: a blurred, enlarged fill
        side = max(w, h)
        canvas = ImageOps.fit(image, (side, side)).filter(ImageFilter.GaussianBlur(side / 30))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        return canvas
    if variant == "text_overlay":
        out = image.copy()
        draw = ImageDraw.Draw(out)
        draw.text(
            (w * 0.06, h * 0.75),
            "DIVE TRIPS -20%",
            font=font(max(24, w // 14)),
            fill=(255, 255, 255),
            stroke_width=3,
            stroke_fill=(0, 0, 0),
        )
        return out
    if variant == "flip":
        return ImageOps.mirror(image)
    if variant == "rotate_3":
        return image.rotate(
            3, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(255, 255, 255)
        )
    raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")

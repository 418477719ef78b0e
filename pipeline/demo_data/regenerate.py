"""Regenerates the embedded demo data from real photos shipped in packages.

    apt-get install --no-install-recommends gcompris-qt-data
    .venv/bin/pip install -e '.[demo-data]'
    .venv/bin/python -m pipeline.demo_data.regenerate

Sources, all real photographs with per-file attribution:
  * Debian ``gcompris-qt-data``: Wikimedia Commons photos; only those whose
    README says Public Domain or CC0 are used;
  * the sample photos of scikit-image, scikit-learn and matplotlib;
  * QR codes generated with ``segno``, composited onto real photos.

Writes, under ``pipeline/demo_data/``:
  * ``CamSDD/{training,validation,test}/<N_Class>/*.jpg`` at 576×384;
  * ``candidates/images/*``: a pool of photos NOT in the labeled splits, in
    their original format and size: new on-topic photos, near-duplicates of
    labeled photos (same original, or a re-encode/crop/... of it), off-topic
    photos; ``candidates/candidates.csv`` (file, label = the class a crawler
    would have queried) and ``candidates/truth.csv`` (the true class);
  * ``ATTRIBUTION.csv``: author, license and source of every file;
  * the TFDS builder's ``dummy_data/`` (a few of the same photos, small).
"""

from __future__ import annotations

import csv
import functools
import io
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps

from pipeline.core import images, variants
from pipeline.demo_data import CAMSDD_ROOT, CANDIDATES_DIR, DEMO_DIR, qres

GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")
GCOMPRIS_PREFIX = "gcompris/src/activities/"
DUMMY_DATA = Path(__file__).resolve().parents[2] / "tfds_camsdd" / "camsdd" / "dummy_data"
LABELED_QUALITY = 90  # keeps the committed demo at a few MB
SPLIT_FOLDER = {"train": "training", "validation": "validation", "test": "test"}

# gcompris paths are relative to gcompris/src/activities/.
FR, DE, IN_ = (
    "explore_monuments/resource/france/",
    "explore_monuments/resource/germany/",
    "explore_monuments/resource/india/",
)
US, WONDERS, EGYPT = (
    "explore_monuments/resource/usa/",
    "explore_monuments/resource/wonders/",
    "explore_monuments/resource/egypt/",
)
MON, REN = "categorization/resource/images/monuments/", "categorization/resource/images/renewable/"
FISH, OTHERS = "categorization/resource/images/fishes/", "categorization/resource/images/others/"
TOOLS = "categorization/resource/images/tools/"
FARM, WILD = "explore_farm_animals/resource/animals/", "explore_world_animals/resource/animals/"
MUSIC, SEA, SOLAR = (
    "explore_world_music/resource/music/",
    "clickgame/resource/",
    "solar_system/resource/",
)

#: (source, class folder, split). "qr:N" is the N-th generated QR photo.
LABELED: list[tuple[str, str, str]] = [
    ("skimage:astronaut.png", "1_Portrait", "train"),
    ("matplotlib:grace_hopper.jpg", "1_Portrait", "test"),
    ("gcompris:" + MUSIC + "mexico.webp", "2_Group_portrait", "train"),
    ("gcompris:" + FARM + "dog.webp", "4_Dog", "train"),
    ("gcompris:" + FARM + "cat.webp", "5_Cat", "train"),
    ("skimage:chelsea.png", "5_Cat", "test"),
    ("skimage:coffee.png", "7_Food", "train"),
    ("gcompris:" + WONDERS + "machuPicchu.webp", "9_Mountain", "train"),
    ("gcompris:" + WONDERS + "greatWallofChina.webp", "9_Mountain", "train"),
    ("gcompris:" + US + "mountRushmore.webp", "9_Mountain", "test"),
    ("gcompris:" + REN + "dam1.webp", "10_Waterfall", "train"),
    ("gcompris:" + REN + "dam5.webp", "10_Waterfall", "train"),
    ("gcompris:" + REN + "dam4.webp", "10_Waterfall", "test"),
    ("gcompris:" + WILD + "polar_bear.webp", "11_Snow", "train"),
    ("gcompris:" + OTHERS + "igloo.webp", "11_Snow", "test"),
    ("gcompris:" + US + "canyondeChelly.webp", "12_Landscape", "train"),
    ("gcompris:" + FR + "rocamadour.webp", "12_Landscape", "train"),
    ("gcompris:" + FR + "montStMichel.webp", "12_Landscape", "validation"),
    ("gcompris:" + FR + "pontduGard.webp", "12_Landscape", "test"),
    ("gcompris:" + SEA + "sea1.webp", "13_Underwater", "train"),
    ("gcompris:" + SEA + "sea2.webp", "13_Underwater", "train"),
    ("gcompris:" + SEA + "sea4.webp", "13_Underwater", "train"),
    ("gcompris:" + FISH + "fish1.webp", "13_Underwater", "train"),
    ("gcompris:" + FISH + "fish10.webp", "13_Underwater", "train"),
    ("gcompris:" + SEA + "sea3.webp", "13_Underwater", "validation"),
    ("gcompris:" + SEA + "sea5.webp", "13_Underwater", "test"),
    ("gcompris:" + FR + "arlesAmphitheater.webp", "14_Architecture", "train"),
    ("gcompris:" + FR + "chateaudeChambord.webp", "14_Architecture", "train"),
    ("gcompris:" + FR + "chateaudeChenonceau.webp", "14_Architecture", "train"),
    ("gcompris:" + FR + "eiffelTower.webp", "14_Architecture", "train"),
    ("gcompris:" + FR + "reimsCathedral.webp", "14_Architecture", "train"),
    ("gcompris:" + DE + "berlinCathedral.webp", "14_Architecture", "train"),
    ("gcompris:" + DE + "neuschwansteinCastle.webp", "14_Architecture", "train"),
    ("gcompris:" + IN_ + "hawaMahal.webp", "14_Architecture", "train"),
    ("gcompris:" + IN_ + "mysorePalace.webp", "14_Architecture", "train"),
    ("sklearn:china.jpg", "14_Architecture", "train"),
    ("gcompris:" + WONDERS + "colosseum.webp", "14_Architecture", "validation"),
    ("gcompris:" + EGYPT + "greatPyramidOfGiza.webp", "14_Architecture", "validation"),
    ("gcompris:" + DE + "schwerinPalace.webp", "14_Architecture", "validation"),
    ("gcompris:" + FR + "palaisdesPapes.webp", "14_Architecture", "test"),
    ("gcompris:" + IN_ + "goldenTemple.webp", "14_Architecture", "test"),
    ("gcompris:" + IN_ + "victoriaMemorial.webp", "14_Architecture", "test"),
    ("gcompris:" + MON + "christTheRedeemer.webp", "16_Blue_Sky", "train"),
    ("gcompris:" + MON + "jucheTower.webp", "16_Blue_Sky", "train"),
    ("gcompris:" + REN + "windmill8.webp", "16_Blue_Sky", "validation"),
    ("gcompris:" + MON + "victoriaMemorial.webp", "16_Blue_Sky", "test"),
    ("gcompris:" + REN + "windmill13.webp", "17_Cloudy_Sky", "train"),
    ("gcompris:" + MON + "bayterek.webp", "17_Cloudy_Sky", "train"),
    ("gcompris:" + REN + "windmill4.webp", "17_Cloudy_Sky", "test"),
    ("gcompris:" + WILD + "chameleon.webp", "18_Greenery", "train"),
    ("gcompris:" + IN_ + "ajantaCave.webp", "18_Greenery", "train"),
    ("gcompris:" + WILD + "hedgehog.webp", "18_Greenery", "test"),
    ("sklearn:flower.jpg", "20_Flower", "train"),
    ("gcompris:" + IN_ + "gatewayofIndia.webp", "21_Night_shot", "train"),
    ("gcompris:" + US + "lincolnMemorial.webp", "21_Night_shot", "train"),
    ("gcompris:" + MON + "zimniPalace.webp", "21_Night_shot", "validation"),
    ("gcompris:" + DE + "brandenburgGate.webp", "21_Night_shot", "test"),
    ("gcompris:" + MUSIC + "orchestra.webp", "22_Stage_concert", "train"),
    ("gcompris:" + MUSIC + "italy.webp", "22_Stage_concert", "train"),
    ("skimage:page.png", "28_Text_Documents", "train"),
    ("skimage:text.png", "28_Text_Documents", "test"),
    ("qr:1", "29_QR_images", "train"),
    ("qr:2", "29_QR_images", "train"),
    ("qr:3", "29_QR_images", "train"),
    ("qr:4", "29_QR_images", "train"),
    ("qr:5", "29_QR_images", "validation"),
    ("qr:6", "29_QR_images", "test"),
]

#: Candidate photos kept as found: (source, queried class, true class or "").
CANDIDATE_PHOTOS: list[tuple[str, str, str]] = [
    # New photos of covered classes.
    ("gcompris:" + SEA + "sea6.webp", "13_Underwater", "13_Underwater"),
    ("gcompris:" + FISH + "fish11.webp", "13_Underwater", "13_Underwater"),
    ("gcompris:" + FISH + "fish14.webp", "13_Underwater", "13_Underwater"),
    ("gcompris:" + FISH + "fish25.webp", "13_Underwater", "13_Underwater"),
    ("gcompris:" + FISH + "fish9.webp", "13_Underwater", "13_Underwater"),
    ("gcompris:" + FISH + "fish3.webp", "13_Underwater", "13_Underwater"),
    ("gcompris:" + FR + "citedeCarcassonne.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + DE + "wormsCathedral.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + DE + "trierImperialBaths.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + IN_ + "konarkSunTemple.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + IN_ + "charminar.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + IN_ + "qutubMinar.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + IN_ + "rangGhar.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + IN_ + "greatStupa.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + US + "georgeWashingtonBirthplace.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + WONDERS + "petra.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + MON + "parthenon.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + MON + "operaHouse.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + MON + "leMusee.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + MON + "usCapitol.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + MON + "monument3.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + MON + "greatWall.webp", "9_Mountain", "9_Mountain"),
    # Another photo of a test image's scene: similar, yet not a duplicate.
    ("gcompris:" + MON + "mountRushmore.webp", "9_Mountain", "9_Mountain"),
    ("gcompris:" + REN + "windmill3.webp", "16_Blue_Sky", "16_Blue_Sky"),
    ("gcompris:" + REN + "windmill15.webp", "17_Cloudy_Sky", "17_Cloudy_Sky"),
    # Off-topic: what a query for the class could plausibly return.
    ("gcompris:" + TOOLS + "hammer2.webp", "6_Macro", ""),
    ("gcompris:" + TOOLS + "plier1.webp", "6_Macro", ""),
    ("gcompris:" + TOOLS + "multimeter2.webp", "30_Computer_Screens", ""),
    ("gcompris:" + OTHERS + "baseball.webp", "6_Macro", ""),
    ("gcompris:" + TOOLS + "spray.webp", "7_Food", ""),
    ("gcompris:" + SOLAR + "saturn.webp", "21_Night_shot", ""),
    ("gcompris:" + SOLAR + "earth.webp", "16_Blue_Sky", ""),
    ("skimage:hubble_deep_field.jpg", "21_Night_shot", ""),
    ("skimage:camera.png", "1_Portrait", ""),  # monochrome: CamSDD has none
    ("skimage:coins.png", "6_Macro", ""),
    ("gcompris:" + WILD + "jaguar.webp", "5_Cat", ""),
    ("gcompris:" + WILD + "lemur.webp", "5_Cat", ""),
    ("gcompris:" + WILD + "panda.webp", "4_Dog", ""),
    ("gcompris:" + WILD + "kangaroo.webp", "4_Dog", ""),
    ("gcompris:" + WILD + "moose.webp", "4_Dog", ""),
    ("gcompris:" + WILD + "crocodile.webp", "13_Underwater", ""),
    ("gcompris:" + WILD + "scarlet_macaw.webp", "20_Flower", ""),
    ("gcompris:" + FARM + "pig.webp", "4_Dog", ""),
    ("gcompris:" + FARM + "chicken.webp", "7_Food", ""),
    ("gcompris:" + MUSIC + "africa.webp", "22_Stage_concert", ""),
    ("gcompris:" + MUSIC + "middleeast.webp", "22_Stage_concert", ""),
    # Same original file as a labeled photo, at another size and crop.
    ("gcompris:" + MON + "colosseum.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + MON + "greatPyramid.webp", "14_Architecture", "14_Architecture"),
    ("gcompris:" + MON + "brandenburgGate.webp", "21_Night_shot", "21_Night_shot"),
    ("qr:7", "29_QR_images", "29_QR_images"),
    ("qr:8", "29_QR_images", "29_QR_images"),
]

#: Candidate photos that share their original with these labeled photos.
NATURAL_DUPLICATES = {
    "gcompris:" + MON + "colosseum.webp": "gcompris:" + WONDERS + "colosseum.webp",
    "gcompris:" + MON + "greatPyramid.webp": "gcompris:" + EGYPT + "greatPyramidOfGiza.webp",
    "gcompris:" + MON + "brandenburgGate.webp": "gcompris:" + DE + "brandenburgGate.webp",
}

#: Edited copies of labeled photos' originals: (source, variant, format).
EDITED_DUPLICATES: list[tuple[str, str, str]] = [
    ("gcompris:" + FR + "eiffelTower.webp", "jpeg_q50", "JPEG"),
    ("gcompris:" + FR + "pontduGard.webp", "downscale_640", "JPEG"),
    ("gcompris:" + FR + "montStMichel.webp", "crop_85", "JPEG"),
    ("gcompris:" + IN_ + "goldenTemple.webp", "brightness_contrast", "JPEG"),
    ("gcompris:" + IN_ + "hawaMahal.webp", "letterbox_4x3", "JPEG"),
    ("gcompris:" + SEA + "sea3.webp", "text_overlay", "JPEG"),
    ("gcompris:" + WONDERS + "machuPicchu.webp", "flip", "WEBP"),
    ("gcompris:" + OTHERS + "igloo.webp", "rotate_3", "JPEG"),
]

#: Edited copies of pool candidates (by their number after the shuffle), appended at the
#: end of the pool: duplicates WITHIN the crawl for dedup to cluster. (number, variant, format)
POOL_DUPLICATES: list[tuple[int, str, str]] = [
    (22, "downscale_640", "JPEG"),
    (13, "jpeg_q50", "JPEG"),
    (3, "letterbox_4x3", "JPEG"),
]

#: Attribution of the photos bundled in Python packages (from their docs).
PACKAGED = {
    "skimage:astronaut.png": (
        "NASA (photo of astronaut Eileen Collins)",
        "Public Domain",
        "https://flic.kr/p/r9qvLn",
    ),
    "skimage:chelsea.png": (
        "Stefan van der Walt",
        "CC0-1.0",
        "https://scikit-image.org/docs/stable/api/skimage.data.html",
    ),
    "skimage:coffee.png": (
        "Rachel Michetti (courtesy of Pikolo Espresso Bar)",
        "CC0-1.0",
        "https://scikit-image.org/docs/stable/api/skimage.data.html",
    ),
    "skimage:camera.png": (
        "Lav Varshney",
        "CC0-1.0",
        "https://scikit-image.org/docs/stable/api/skimage.data.html",
    ),
    "skimage:coins.png": (
        "Brooklyn Museum (Greek coins from Pompeii)",
        "No known copyright restrictions",
        "https://www.brooklynmuseum.org/opencollection/archives/image/51611",
    ),
    "skimage:hubble_deep_field.jpg": (
        "NASA",
        "Public Domain",
        "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
    ),
    "skimage:text.png": (
        "Wikipedia user (File:Corner.png)",
        "Public Domain",
        "https://en.wikipedia.org/wiki/File:Corner.png",
    ),
    "skimage:page.png": (
        "scikit-image sample data",
        "BSD-3-Clause (scikit-image; no image-specific license stated)",
        "https://scikit-image.org/docs/stable/api/skimage.data.html",
    ),
    "skimage:brick.png": (
        "CC0Textures (Bricks25)",
        "CC0-1.0",
        "https://cc0textures.com/view.php?tex=Bricks25",
    ),
    "skimage:gravel.png": (
        "CC0Textures (Gravel04)",
        "CC0-1.0",
        "https://cc0textures.com/view.php?tex=Gravel04",
    ),
    "skimage:grass.png": (
        "linolafett (DeviantArt)",
        "CC0-1.0",
        "https://www.deviantart.com/linolafett/art/Grass-01-434853879",
    ),
    "sklearn:china.jpg": (
        "danielbuechele (Flickr)",
        "CC-BY-2.0",
        "https://www.flickr.com/photos/danielbuechele/6061409035/",
    ),
    "sklearn:flower.jpg": (
        "vultilion (Flickr)",
        "CC-BY-2.0",
        "https://www.flickr.com/photos/vultilion/6056698931/",
    ),
    "matplotlib:grace_hopper.jpg": (
        "U.S. Navy (Grace Hopper)",
        "Public Domain",
        "https://commons.wikimedia.org/wiki/File:Commodore_Grace_M._Hopper,_USN_(covered).jpg",
    ),
}

#: QR payloads and the real photos they are composited onto (one photo each,
#: so no two QR images share a background across splits or with the pool).
QR_CODES = {
    1: ("https://example.org/menu/today", "skimage:brick.png"),
    2: ("WIFI:T:WPA;S:Cafe-Guest;P:espresso42;;", "gcompris:" + OTHERS + "blackslate.webp"),
    3: ("https://example.org/tickets/8841", "skimage:gravel.png"),
    4: ("BEGIN:VCARD\nVERSION:3.0\nFN:Demo Person\nEND:VCARD", "gcompris:" + OTHERS + "pan.webp"),
    5: ("https://example.org/museum/room-12", "gcompris:" + OTHERS + "pillow.webp"),
    6: ("geo:46.5197,6.6323", "skimage:grass.png"),
    7: ("https://example.org/parking/pay", "gcompris:" + OTHERS + "bucket.webp"),
    8: ("SMSTO:+10000000000:hello", "gcompris:" + OTHERS + "knife.webp"),
}


@dataclass
class Photo:
    """A source photo with its provenance."""

    source: str
    data: bytes
    author: str
    license: str
    source_url: str
    origin: str

    def image(self) -> Image.Image:
        return images.open_image(self.data)


@functools.cache
def _gcompris_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "gcompris-qt-data"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown version"


@functools.cache
def _gcompris_bundle(activity: str) -> dict[str, bytes]:
    path = GCOMPRIS_RCC / f"{activity}.rcc"
    if not path.exists():
        raise SystemExit(
            f"{path} not found: run `apt-get install --no-install-recommends gcompris-qt-data`."
        )
    return qres.read_qres(path)


def _parse_gcompris_readme(text: str) -> dict[str, dict[str, str]]:
    """File name -> {author, license, source_url} from a gcompris README."""
    out = {}
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        key = None
        for line in block.splitlines():
            match = re.match(r"^(Copyright|Source|License|Comments?|Files):\s*(.*)$", line)
            if match:
                key = match.group(1)
                fields.setdefault(key, [])
                if match.group(2).strip():
                    fields[key].append(match.group(2).strip())
            elif key and line.strip():
                fields[key].append(line.strip())
        source = " ".join(fields.get("Source", []))
        if not source:  # some READMEs put it in a comment: "original source at <url>"
            found = re.search(r"original source at (\S+)", " ".join(fields.get("Comment", [])))
            source = found.group(1) if found else ""
        for entry in fields.get("Files", []):
            for name in entry.split():
                out[name] = {
                    "author": "; ".join(fields.get("Copyright", [])),
                    "license": " ".join(fields.get("License", [])),
                    "source_url": source,
                }
    return out


def _package_file(source: str) -> Path:
    kind, name = source.split(":", 1)
    if kind == "skimage":
        import skimage

        return Path(skimage.__file__).parent / "data" / name
    if kind == "sklearn":
        import sklearn

        return Path(sklearn.__file__).parent / "datasets" / "images" / name
    if kind == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / name
    raise ValueError(source)


@functools.cache
def load_photo(source: str) -> Photo:
    kind, name = source.split(":", 1)
    if kind == "gcompris":
        activity = name.split("/", 1)[0]
        bundle = _gcompris_bundle(activity)
        data = bundle[GCOMPRIS_PREFIX + name]
        folder, file_name = name.rsplit("/", 1)
        # The README covering a file sits in its folder or one above it.
        meta = None
        for readme_dir, rel in (
            (folder, file_name),
            (folder.rsplit("/", 1)[0], name.rsplit("/", 2)[-2] + "/" + file_name),
        ):
            readme = bundle.get(GCOMPRIS_PREFIX + readme_dir + "/README")
            if readme is not None:
                meta = _parse_gcompris_readme(readme.decode("utf-8", "replace")).get(rel)
                if meta:
                    break
        if meta is None:
            raise SystemExit(f"no attribution for gcompris file {name}")
        if not re.search(r"public domain|cc0", meta["license"], re.IGNORECASE):
            raise SystemExit(f"{name} is {meta['license']!r}, not Public Domain/CC0")
        license_ = "CC0-1.0" if "cc0" in meta["license"].lower() else "Public Domain"
        return Photo(
            source,
            data,
            meta["author"],
            license_,
            meta["source_url"],
            f"Debian gcompris-qt-data {_gcompris_version()}: {name}",
        )
    path = _package_file(source)
    author, license_, url = PACKAGED[source]
    package = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}[
        kind
    ]
    return Photo(source, path.read_bytes(), author, license_, url, f"{package} sample data: {name}")


def _encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=quality)
    elif fmt == "WEBP":
        image.save(buffer, "WEBP", quality=quality)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def make_qr_photo(number: int) -> tuple[Image.Image, Photo]:
    """A QR code printed on a card, lying on a real photographed surface."""
    import segno

    payload, background_source = QR_CODES[number]
    rng = random.Random(number)
    background_photo = load_photo(background_source)
    background = images.fit_to_size(images.to_rgb(background_photo.image()))
    if background_photo.image().mode == "L":  # tint grayscale textures like warm light
        tint = Image.new(
            "RGB",
            background.size,
            (rng.randint(170, 230), rng.randint(140, 190), rng.randint(100, 150)),
        )
        background = Image.blend(background, tint, 0.35)
    buffer = io.BytesIO()
    segno.make(payload, error="m").save(buffer, kind="png", scale=8, border=4)
    code = Image.open(buffer).convert("RGB")
    side = rng.randint(190, 280)
    code = code.resize((side, side), Image.Resampling.NEAREST)
    card = Image.new("RGB", (side + 24, side + 24), (248, 246, 240))
    card.paste(code, (12, 12))
    card = card.convert("RGBA").rotate(
        rng.uniform(-12, 12), expand=True, resample=Image.Resampling.BICUBIC
    )
    shadow = Image.new("RGBA", card.size, (0, 0, 0, 0))
    shadow.putalpha(card.getchannel("A").point(lambda a: 90 if a else 0))
    x = rng.randint(40, images.TARGET_WIDTH - card.width - 40)
    y = rng.randint(10, max(11, images.TARGET_HEIGHT - card.height - 10))
    composed = background.convert("RGBA")
    composed.alpha_composite(shadow.filter(ImageFilter.GaussianBlur(6)), (x + 6, y + 8))
    composed.alpha_composite(card, (x, y))
    photo = composed.convert("RGB").filter(ImageFilter.GaussianBlur(0.6))
    meta = Photo(
        f"qr:{number}",
        b"",
        f"generated QR code on a photo by {background_photo.author}",
        background_photo.license,
        background_photo.source_url,
        f"segno QR code ({payload!r}) composited onto {background_photo.origin}",
    )
    return photo, meta


def _slug(source: str) -> str:
    kind, name = source.split(":", 1)
    prefix = {"gcompris": "gc", "skimage": "sk", "sklearn": "skl", "matplotlib": "mpl", "qr": "qr"}[
        kind
    ]
    stem = Path(name).stem if kind != "qr" else f"{int(name):02d}"
    return f"{prefix}_{stem}"


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def regenerate() -> None:
    for stale in (CAMSDD_ROOT, CANDIDATES_DIR, DUMMY_DATA):
        if stale.exists():
            shutil.rmtree(stale)
    attribution: list[dict] = []
    labeled_path: dict[str, str] = {}
    labeled_jpeg: dict[str, bytes] = {}

    def attribute(path: Path, photo: Photo, modifications: str) -> None:
        attribution.append(
            {
                "path": path.relative_to(DEMO_DIR).as_posix(),
                "author": photo.author,
                "license": photo.license,
                "source_url": photo.source_url,
                "origin": photo.origin,
                "modifications": modifications,
            }
        )

    for source, class_folder, split in LABELED:
        if source.startswith("qr:"):
            image, photo = make_qr_photo(int(source[3:]))
            note = "QR code composited onto the photo; 576x384, JPEG q90"
        else:
            photo = load_photo(source)
            image = images.fit_to_size(images.to_rgb(ImageOps.exif_transpose(photo.image())))
            note = "center-cropped to 3:2, resized to 576x384 (LANCZOS), JPEG q90"
        out = CAMSDD_ROOT / SPLIT_FOLDER[split] / class_folder / f"{_slug(source)}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        data = images.encode_jpeg(image, quality=LABELED_QUALITY)
        out.write_bytes(data)
        labeled_path[source] = out.relative_to(CAMSDD_ROOT).as_posix()
        labeled_jpeg[source] = data
        attribute(out, photo, note)

    # The candidate pool, in a fixed shuffled order so names say nothing.
    pool: list[dict] = []
    for source, query_class, true_class in CANDIDATE_PHOTOS:
        if source.startswith("qr:"):
            image, photo = make_qr_photo(int(source[3:]))
            data, ext, note = _encode(image, "JPEG"), ".jpg", "generated; JPEG q90"
        else:
            photo = load_photo(source)
            data, ext, note = photo.data, Path(source).suffix, "unchanged original file"
        duplicate_of = labeled_path.get(NATURAL_DUPLICATES.get(source, ""), "")
        pool.append(
            {
                "data": data,
                "ext": ext,
                "photo": photo,
                "note": note,
                "label": query_class,
                "true_class": true_class,
                "kind": "near_duplicate"
                if duplicate_of
                else ("on_topic" if true_class else "off_topic"),
                "duplicate_of": duplicate_of,
                "variant": "same_original" if duplicate_of else "",
            }
        )
    label_of = {source: class_folder for source, class_folder, _ in LABELED}
    for source, variant, fmt in EDITED_DUPLICATES:
        photo = load_photo(source)
        original = photo.image()
        original.thumbnail((1024, 1024), Image.Resampling.LANCZOS)  # keeps the repo small
        edited = variants.make_variant(original, variant)
        quality = 50 if variant == "jpeg_q50" else 85
        ext = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[fmt]
        pool.append(
            {
                "data": _encode(edited, fmt, quality),
                "ext": ext,
                "photo": photo,
                "note": f"near-duplicate made by {variant}",
                "label": label_of[source],
                "true_class": label_of[source],
                "kind": "near_duplicate",
                "duplicate_of": labeled_path[source],
                "variant": variant,
            }
        )
    random.Random(2021).shuffle(pool)
    for number, variant, fmt in POOL_DUPLICATES:
        entry = pool[number - 1]
        original = images.open_image(entry["data"])
        original.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
        edited = variants.make_variant(original, variant)
        pool.append(
            {
                **entry,
                "data": _encode(edited, fmt, 50 if variant == "jpeg_q50" else 85),
                "ext": {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[fmt],
                "note": f"near-duplicate of candidate {number} made by {variant}",
                "kind": "near_duplicate",
                "duplicate_of": f"candidates/images/cand_{number:03d}{entry['ext']}",
                "variant": variant,
            }
        )
    (CANDIDATES_DIR / "images").mkdir(parents=True)
    candidates, truth = [], []
    for number, entry in enumerate(pool, start=1):
        name = f"cand_{number:03d}{entry['ext']}"
        path = CANDIDATES_DIR / "images" / name
        path.write_bytes(entry["data"])
        attribute(path, entry["photo"], entry["note"])
        candidates.append({"file": f"images/{name}", "label": entry["label"]})
        truth.append(
            {
                "file": f"images/{name}",
                "true_class": entry["true_class"],
                "kind": entry["kind"],
                "duplicate_of": entry["duplicate_of"],
                "variant": entry["variant"],
            }
        )
    _write_csv(CANDIDATES_DIR / "candidates.csv", candidates)
    _write_csv(CANDIDATES_DIR / "truth.csv", truth)

    _write_dummy_data(labeled_jpeg, labeled_path)
    attribution.sort(key=lambda row: row["path"])
    _write_csv(DEMO_DIR / "ATTRIBUTION.csv", attribution)
    # The URL list the demo config crawls (the pool served on loopback, credits included).
    from pipeline.cli import demo

    demo.write_demo_url_list(demo.DEMO_URL_BASE, CANDIDATES_DIR / "urls.csv")
    demo.write_demo_url_truth(demo.DEMO_URL_BASE, CANDIDATES_DIR / "url_truth.csv")
    _print_summary()


def _write_dummy_data(labeled_jpeg: dict[str, bytes], labeled_path: dict[str, str]) -> None:
    """Small copies of a few demo photos, plus the junk a real archive holds."""
    chosen = [
        "skimage:astronaut.png",
        "matplotlib:grace_hopper.jpg",
        "gcompris:" + WONDERS + "machuPicchu.webp",
        "gcompris:" + WONDERS + "greatWallofChina.webp",
        "gcompris:" + US + "mountRushmore.webp",
        "gcompris:" + REN + "dam1.webp",
        "gcompris:" + REN + "dam5.webp",
        "gcompris:" + REN + "dam4.webp",
        "gcompris:" + FR + "montStMichel.webp",
    ]
    # Dummy splits must differ from the demo's where a class has one photo.
    moves = {
        "gcompris:" + FR + "montStMichel.webp": "validation/9_Mountain",
        "gcompris:" + REN + "dam5.webp": "validation/10_Waterfall",
    }
    root = DUMMY_DATA / "CamSDD"
    attribution = []
    for source in chosen:
        rel = labeled_path[source]
        if source in moves:
            rel = f"{moves[source]}/{Path(rel).name}"
        out = root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        small = images.encode_jpeg(images.open_image(labeled_jpeg[source]), quality=40)
        out.write_bytes(small)
        photo = load_photo(source)
        attribution.append(
            {
                "path": out.relative_to(DUMMY_DATA).as_posix(),
                "author": photo.author,
                "license": photo.license,
                "source_url": photo.source_url,
                "origin": photo.origin,
                "modifications": "the demo's 576x384 photo re-encoded at JPEG q40",
            }
        )
    attribution += _write_dummy_pseudolabel()
    _write_csv(DUMMY_DATA / "ATTRIBUTION.csv", sorted(attribution, key=lambda r: r["path"]))
    # What real archives carry besides images: must be ignored, not fail.
    (root / "training" / "9_Mountain" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (root / "training" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "LICENSE.md").write_text("CamSDD is licensed CC BY-NC-SA 4.0 (dummy copy for tests).\n")
    (DUMMY_DATA / "__MACOSX" / "CamSDD").mkdir(parents=True)
    (DUMMY_DATA / "__MACOSX" / "CamSDD" / "._LICENSE.md").write_bytes(b"\x00\x05\x16\x07")
    (DUMMY_DATA / "README.md").write_text(
        "Tiny CamSDD-shaped tree for the builder test: real photos from the demo data\n"
        "(authors and licenses in ATTRIBUTION.csv), re-encoded at JPEG quality 40, plus\n"
        "the junk real archives hold (Thumbs.db, .DS_Store, __MACOSX/, LICENSE.md).\n"
        "Regenerate with `python -m pipeline.demo_data.regenerate`.\n"
    )


#: Pool candidates in the dummy ``extra_pseudo`` manifest: (file, pseudo label, status, reason).
DUMMY_PSEUDOLABEL = [
    ("cand_003.webp", "13_Underwater", "kept", None),
    ("cand_007.webp", "14_Architecture", "kept", None),
    ("cand_004.webp", "9_Mountain", "dropped", "low_confidence"),  # must not be built
]
DUMMY_PSEUDOLABEL_RUN = "20261124T000000-000000"


def _write_dummy_pseudolabel() -> list[dict]:
    """A ``camsdd pseudolabel``-shaped manifest of two pool photos (paths relative to the
    work dir: dummy_data/ plays W)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.core import classes

    folder = DUMMY_DATA / "pseudolabel"
    with open(DEMO_DIR / "ATTRIBUTION.csv", newline="") as handle:
        credits = {r["path"]: r for r in csv.DictReader(handle)}
    rows, attribution = [], []
    for name, label, status, reason in DUMMY_PSEUDOLABEL:
        credit = credits[f"candidates/images/{name}"]
        image_path = f"images/{Path(name).stem}.jpg"
        if status == "kept":
            out = folder / image_path
            out.parent.mkdir(parents=True, exist_ok=True)
            photo = images.fit_to_size(images.to_rgb(Image.open(CANDIDATES_DIR / "images" / name)))
            out.write_bytes(images.encode_jpeg(photo, quality=40))
            attribution.append(
                {
                    **{k: credit[k] for k in ("author", "license", "source_url", "origin")},
                    "path": out.relative_to(DUMMY_DATA).as_posix(),
                    "modifications": "center-cropped to 3:2, resized to 576x384, JPEG q40",
                }
            )
        soft = [0.01] * classes.NUM_CLASSES
        soft[classes.CLASS_FOLDERS.index(label)] = 1 - 0.01 * (classes.NUM_CLASSES - 1)
        rows.append(
            {
                "key": f"urls-{Path(name).stem}",
                "status": status,
                "reason": reason,
                # Relative to the work dir, the folder above the manifest's folder.
                "image_path": f"pseudolabel/{image_path}",
                "label": label,
                "confidence": max(soft),
                "soft_label": soft,
                "source": "urls",
                "url": credit["source_url"],
                "license": credit["license"],
                "author": credit["author"],
                "query_class": label,
            }
        )
    table = pa.Table.from_pylist(rows)
    table = table.set_column(
        table.schema.get_field_index("soft_label"),
        "soft_label",
        table.column("soft_label").cast(pa.list_(pa.float32())),
    )
    pq.write_table(table, folder / f"manifest-{DUMMY_PSEUDOLABEL_RUN}-00000-of-00001.parquet")
    return attribution


def _print_summary() -> None:
    from pipeline.core import classes
    from pipeline.store import camsdd_layout

    scan = camsdd_layout.scan_camsdd(CAMSDD_ROOT)
    covered = [
        c for c in classes.CLASS_FOLDERS if any(s.class_counts()[c] for s in scan.splits.values())
    ]
    print(scan.summary())
    print(f"covered classes ({len(covered)}): {', '.join(covered)}")
    print("empty classes:", ", ".join(c for c in classes.CLASS_FOLDERS if c not in covered))
    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    print(f"demo data: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    regenerate()

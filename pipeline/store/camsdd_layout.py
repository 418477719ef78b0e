"""Find and scan a CamSDD folder tree: ``{training,validation,test}/<N_Class>/*.jpg``.

The scan lists files; it never opens images (the Beam workers do that). All IO
goes through ``etils.epath``, so the root may be local or ``gs://``.
"""

from __future__ import annotations

import dataclasses
import os

from etils import epath

from pipeline.core import classes
from pipeline.core.errors import UserError

ARCHIVE_NAME = "CamSDD.zip"

#: TFDS split name -> folder names accepted for it, official name first.
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("training", "train"),
    "validation": ("validation", "val"),
    "test": ("test", "testing"),
}
#: Image counts of the official CamSDD release (image files only).
OFFICIAL_COUNTS: dict[str, int] = {"train": 9_897, "validation": 600, "test": 600}
#: Official validation and test splits hold 20 images per class.
OFFICIAL_PER_CLASS: dict[str, int] = {"validation": 20, "test": 20}

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
#: Folders that archivers add and that are never data.
_JUNK_FOLDERS = frozenset({"__MACOSX", ".ipynb_checkpoints"})

LAYOUT_HELP = """\
Expected layout (as in CamSDD.zip):

  <manual_dir>/CamSDD/training/1_Portrait/*.jpg      (9,897 training images)
  <manual_dir>/CamSDD/validation/1_Portrait/*.jpg    (600 images, 20 per class)
  <manual_dir>/CamSDD/test/1_Portrait/*.jpg          (600 images, 20 per class)
  ... one folder per class, 1_Portrait to 30_Computer_Screens.

The CamSDD/ level is optional: <manual_dir>/training/... works too, and so does
<manual_dir>/CamSDD.zip, which is extracted on first use.

Get the data: CamSDD comes with "Fast and Accurate Camera Scene Detection on
Smartphones" (Pouget et al., 2021, arXiv:2105.07869), CC BY-NC-SA 4.0. Download
CamSDD.zip from the project page, https://people.ee.ethz.ch/~ihnatova/camsdd.html,
and put it (or the CamSDD/ folder extracted from it) in the manual dir."""


class CamsddLayoutError(UserError, ValueError):
    """The folder tree is not a usable CamSDD layout; the message says why."""


@dataclasses.dataclass(frozen=True)
class LabeledFile:
    """One image file of a labeled split."""

    split: str
    split_folder: str
    class_folder: str
    file_name: str
    path: str

    @property
    def label(self) -> int:
        return classes.class_index(self.class_folder)

    @property
    def key(self) -> str:
        """Stable example key: independent of where the data sits on disk."""
        return f"{self.split}/{self.class_folder}/{self.file_name}"

    @property
    def relative_path(self) -> str:
        return f"{self.split_folder}/{self.class_folder}/{self.file_name}"


@dataclasses.dataclass
class SplitScan:
    """What one split folder holds."""

    split: str
    folder: str
    files: list[LabeledFile]
    #: (relative path, why it was left out) for everything that is not used.
    ignored: list[tuple[str, str]]
    #: Class folders with no image in this split (missing or empty).
    empty_classes: list[str]

    def class_counts(self) -> dict[str, int]:
        counts = {folder: 0 for folder in classes.CLASS_FOLDERS}
        for f in self.files:
            counts[f.class_folder] += 1
        return counts


@dataclasses.dataclass
class LayoutScan:
    """The result of scanning a CamSDD root."""

    root: str
    splits: dict[str, SplitScan]
    #: Top-level entries of the root that are not split folders.
    ignored_top_level: list[str]

    def count_warnings(self) -> list[str]:
        """Differences from the official release, one sentence each."""
        warnings = []
        for split, scan in self.splits.items():
            found, official = len(scan.files), OFFICIAL_COUNTS[split]
            if found != official:
                diff = found - official
                more_or_fewer = "more" if diff > 0 else "fewer"
                warnings.append(
                    f"{split}: {found:,} images, the official CamSDD release has "
                    f"{official:,} ({abs(diff):,} {more_or_fewer})"
                )
            per_class = OFFICIAL_PER_CLASS.get(split)
            if per_class is not None:
                off = {c: n for c, n in scan.class_counts().items() if n != per_class}
                if off and len(off) < len(classes.CLASS_FOLDERS):
                    listed = ", ".join(f"{c}={n}" for c, n in off.items())
                    warnings.append(
                        f"{split}: classes without the official {per_class} images: {listed}"
                    )
            if scan.empty_classes:
                count = len(scan.empty_classes)
                warnings.append(
                    f"{split}: no images for {count} class{'es' if count > 1 else ''}: "
                    + ", ".join(scan.empty_classes)
                )
        return warnings

    def summary(self) -> str:
        """A few human-readable lines (warnings are in count_warnings())."""
        lines = [f"CamSDD root: {self.root}"]
        for split, scan in self.splits.items():
            lines.append(
                f"  {split:<10} {len(scan.files):>6,} images in {scan.folder}/"
                f" ({len(classes.CLASS_FOLDERS) - len(scan.empty_classes)} classes),"
                f" {len(scan.ignored)} files ignored"
            )
        for split, scan in self.splits.items():
            for path, why in scan.ignored[:5]:
                lines.append(f"  ignored {path}: {why}")
            if len(scan.ignored) > 5:
                lines.append(f"  ... and {len(scan.ignored) - 5} more ignored in {split}")
        return "\n".join(lines)


def _as_path(path):
    """epath for any path; a place inside an archive (zipfile.Path) as it is."""
    import zipfile

    return path if isinstance(path, zipfile.Path) else epath.Path(path)


def find_root_or_archive(manual_dir: epath.PathLike):
    """The CamSDD root in ``manual_dir``, or inside its ``CamSDD.zip`` (read in place).

    What ``camsdd check`` scans: the same trees the build accepts, without extracting
    or decoding anything. Raises CamsddLayoutError as ``find_camsdd_root`` does.
    """
    try:
        return find_camsdd_root(manual_dir)
    except CamsddLayoutError:
        archive = epath.Path(manual_dir) / ARCHIVE_NAME
        if not archive.exists():
            raise
    import zipfile

    try:
        tree = zipfile.Path(zipfile.ZipFile(archive.open("rb")))  # the listing only
    except zipfile.BadZipFile as error:
        raise CamsddLayoutError(f"{archive} is not a readable zip archive ({error})") from None
    return find_camsdd_root(tree)


def check_buildable(scan: LayoutScan) -> None:
    """Raises CamsddLayoutError when the build would refuse the tree (a split with no image)."""
    for split_scan in scan.splits.values():
        if not split_scan.files:
            raise CamsddLayoutError(
                f"{scan.root}/{split_scan.folder}/ holds no images.\n\n{LAYOUT_HELP}"
            )


def _split_folders_in(path: epath.Path) -> dict[str, str]:
    """Split name -> folder name, for the split folders directly in ``path``."""
    try:
        names = {p.name for p in path.iterdir() if p.is_dir()}
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for split, accepted in SPLIT_FOLDERS.items():
        present = [name for name in accepted if name in names]
        if len(present) > 1:
            raise CamsddLayoutError(
                f"{path} has both {' and '.join(n + '/' for n in present)} for the "
                f"{split} split; keep one of them."
            )
        if present:
            found[split] = present[0]
    return found


def find_camsdd_root(manual_dir: epath.PathLike) -> epath.Path:
    """Returns the folder that holds ``training/``, ``validation/`` and ``test/``.

    Looks in ``manual_dir`` itself, then in its immediate subfolders (such as
    ``CamSDD/``).

    Raises:
      CamsddLayoutError: no such folder, several candidates, or a candidate
        that lacks one of the three splits. The message lists what was found and
        how to get the data.
    """
    manual_dir = _as_path(manual_dir)
    # An archive's top (zipfile.Path) exists but does not say so.
    if isinstance(manual_dir, epath.Path) and not manual_dir.exists():
        raise CamsddLayoutError(f"{manual_dir} does not exist.\n\n{LAYOUT_HELP}")
    if isinstance(manual_dir, epath.Path) and not manual_dir.is_dir():
        raise CamsddLayoutError(f"{manual_dir} is not a folder.\n\n{LAYOUT_HELP}")
    candidates = []
    if _split_folders_in(manual_dir):
        candidates.append(manual_dir)
    else:
        for child in sorted(manual_dir.iterdir(), key=lambda p: p.name):
            if child.name in _JUNK_FOLDERS or child.name.startswith("."):
                continue
            if child.is_dir() and _split_folders_in(child):
                candidates.append(child)
    if not candidates:
        listing = sorted(p.name + ("/" if p.is_dir() else "") for p in manual_dir.iterdir())
        shown = ", ".join(listing[:20]) + (" ..." if len(listing) > 20 else "")
        raise CamsddLayoutError(
            f"No CamSDD data in {manual_dir}: it holds no training/, validation/ or "
            f"test/ folder, directly or one level down. Found: {shown or 'nothing'}."
            f"\n\n{LAYOUT_HELP}"
        )
    if len(candidates) > 1:
        raise CamsddLayoutError(
            f"Several CamSDD roots in {manual_dir}: "
            + ", ".join(str(c) for c in candidates)
            + ". Point the manual dir at one of them."
        )
    root = candidates[0]
    missing = [s for s in SPLIT_FOLDERS if s not in _split_folders_in(root)]
    if missing:
        wanted = ", ".join(SPLIT_FOLDERS[s][0] + "/" for s in missing)
        raise CamsddLayoutError(
            f"{root} lacks {wanted} (it needs training/, validation/ and test/).\n\n{LAYOUT_HELP}"
        )
    return root


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan_split(root: epath.Path, split: str, folder: str) -> tuple[SplitScan, list[str]]:
    """Scans one split; returns it and the unknown class folders it holds."""
    split_dir = root / folder
    files: list[LabeledFile] = []
    ignored: list[tuple[str, str]] = []
    unknown: list[str] = []
    for entry in sorted(split_dir.iterdir(), key=lambda p: p.name):
        rel = f"{folder}/{entry.name}"
        if entry.name.startswith(".") or entry.name in _JUNK_FOLDERS:
            ignored.append((rel, "hidden or archiver file"))
            continue
        if not entry.is_dir():
            ignored.append((rel, "not inside a class folder"))
            continue
        try:
            classes.class_index(entry.name)
        except classes.UnknownClassFolderError:
            unknown.append(f"{folder}/{entry.name}")
            continue
        for item in sorted(entry.iterdir(), key=lambda p: p.name):
            item_rel = f"{rel}/{item.name}"
            if item.name.startswith("."):
                # Includes macOS "._name.jpg" resource forks, which are not images.
                ignored.append((item_rel, "hidden or archiver file"))
            elif _is_image_name(item.name):
                files.append(LabeledFile(split, folder, entry.name, item.name, str(item)))
            elif item.is_dir():
                ignored.append((item_rel + "/", "nested folder inside a class folder"))
            else:
                extension = os.path.splitext(item.name)[1] or "no extension"
                ignored.append((item_rel, f"not an image file ({extension})"))
    present = {f.class_folder for f in files}
    empty = [c for c in classes.CLASS_FOLDERS if c not in present]
    return SplitScan(split, folder, files, ignored, empty), unknown


def scan_camsdd(root: epath.PathLike) -> LayoutScan:
    """Lists the labeled image files under a CamSDD root.

    Raises:
      CamsddLayoutError: a split folder is missing, or there are class folders
        that are not CamSDD classes (all of them are named in the message).
    """
    root = _as_path(root)
    split_folders = _split_folders_in(root)
    missing = [s for s in SPLIT_FOLDERS if s not in split_folders]
    if missing:
        wanted = ", ".join(SPLIT_FOLDERS[s][0] + "/" for s in missing)
        raise CamsddLayoutError(f"{root} lacks {wanted}.\n\n{LAYOUT_HELP}")
    splits: dict[str, SplitScan] = {}
    unknown: list[str] = []
    for split, folder in split_folders.items():
        splits[split], split_unknown = _scan_split(root, split, folder)
        unknown.extend(split_unknown)
    if unknown:
        described = "\n".join(
            f"  {path}: {classes.describe_unknown_folder(path.split('/', 1)[1])}"
            for path in unknown
        )
        raise CamsddLayoutError(
            f"Unknown class folders in {root}:\n{described}\n"
            f"The 30 CamSDD class folders are: {', '.join(classes.CLASS_FOLDERS)}."
        )
    used = set(split_folders.values())
    ignored_top = sorted(p.name for p in root.iterdir() if p.name not in used)
    return LayoutScan(str(root), splits, ignored_top)

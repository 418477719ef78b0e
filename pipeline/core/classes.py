"""The 30 CamSDD classes, in the order that defines their label index.

CamSDD names its class folders with a 1-based numeric prefix (``1_Portrait`` …
``30_Computer_Screens``). The label index is ``prefix - 1``. Sorting the folder
names as strings puts ``10_Waterfall`` before ``2_Group_portrait`` and silently
permutes the labels, so everything here orders by the number.
"""

from __future__ import annotations

import difflib
import re

CLASS_FOLDERS: tuple[str, ...] = (
    "1_Portrait",
    "2_Group_portrait",
    "3_Kids",
    "4_Dog",
    "5_Cat",
    "6_Macro",
    "7_Food",
    "8_Beach",
    "9_Mountain",
    "10_Waterfall",
    "11_Snow",
    "12_Landscape",
    "13_Underwater",
    "14_Architecture",
    "15_Sunset_Sunrise",
    "16_Blue_Sky",
    "17_Cloudy_Sky",
    "18_Greenery",
    "19_Autumn_leaves",
    "20_Flower",
    "21_Night_shot",
    "22_Stage_concert",
    "23_Fireworks",
    "24_Candle_light",
    "25_Neon_lights",
    "26_Indoor",
    "27_Backlight",
    "28_Text_Documents",
    "29_QR_images",
    "30_Computer_Screens",
)

#: Class names without the numeric prefix, index-aligned with CLASS_FOLDERS.
CLASS_NAMES: tuple[str, ...] = tuple(f.split("_", 1)[1] for f in CLASS_FOLDERS)

NUM_CLASSES = len(CLASS_FOLDERS)

_FOLDER_TO_INDEX = {folder: i for i, folder in enumerate(CLASS_FOLDERS)}
_PREFIX = re.compile(r"^(\d+)_")


class UnknownClassFolderError(ValueError):
    """A folder name that is not one of the 30 CamSDD class folders."""


def class_index(folder: str) -> int:
    """Returns the 0-based label index of a CamSDD class folder name.

    >>> class_index("1_Portrait"), class_index("10_Waterfall")
    (0, 9)

    Raises:
      UnknownClassFolderError: ``folder`` is not exactly one of CLASS_FOLDERS;
        the message names the folder and the closest known name.
    """
    try:
        return _FOLDER_TO_INDEX[folder]
    except KeyError:
        raise UnknownClassFolderError(
            f"{describe_unknown_folder(folder)}; the 30 class folders are "
            + ", ".join(CLASS_FOLDERS)
        ) from None


def numeric_prefix(folder: str) -> int | None:
    """The leading number of ``N_Name``, or None when there is none."""
    match = _PREFIX.match(folder)
    return int(match.group(1)) if match else None


def sort_class_folders(folders: list[str] | tuple[str, ...]) -> list[str]:
    """Sorts class folder names by their numeric prefix (``9_`` before ``10_``).

    Names without a numeric prefix sort last, alphabetically.
    """

    def key(name: str) -> tuple[int, int, str]:
        number = numeric_prefix(name)
        return (0, number, name) if number is not None else (1, 0, name)

    return sorted(folders, key=key)


def describe_unknown_folder(folder: str) -> str:
    """``unknown CamSDD class folder 'x'``, with the closest known name if any."""
    message = f"unknown CamSDD class folder {folder!r}"
    suggestion = difflib.get_close_matches(folder, CLASS_FOLDERS, n=1, cutoff=0.6)
    number = numeric_prefix(folder)
    if not suggestion and number is not None and 1 <= number <= NUM_CLASSES:
        suggestion = [CLASS_FOLDERS[number - 1]]
    if suggestion:
        message += f" (did you mean {suggestion[0]!r}?)"
    return message

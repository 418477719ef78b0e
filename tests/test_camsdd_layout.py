"""Finding and scanning CamSDD trees, good and bad."""

import shutil
from pathlib import Path

import pytest

from pipeline.core import classes
from pipeline.store import camsdd_layout
from pipeline.store.camsdd_layout import CamsddLayoutError


def test_finds_the_root_one_level_down_and_skips_macos_junk(manual_dir):
    assert (manual_dir / "__MACOSX").is_dir()
    root = camsdd_layout.find_camsdd_root(manual_dir)
    assert root.name == "CamSDD"
    assert camsdd_layout.find_camsdd_root(manual_dir / "CamSDD") == root


def test_scan_lists_labeled_images_and_ignores_the_rest(manual_dir):
    scan = camsdd_layout.scan_camsdd(manual_dir / "CamSDD")
    counts = {split: len(s.files) for split, s in scan.splits.items()}
    assert counts == {"train": 4, "validation": 2, "test": 3}
    ignored = dict(sum((s.ignored for s in scan.splits.values()), []))
    assert ignored == {
        "training/.DS_Store": "hidden or archiver file",
        "training/9_Mountain/Thumbs.db": "not an image file (.db)",
    }
    assert scan.ignored_top_level == ["LICENSE.md"]
    waterfall = [f for f in scan.splits["train"].files if f.class_folder == "10_Waterfall"]
    assert [f.label for f in waterfall] == [9]


def test_keys_do_not_depend_on_where_the_data_is(manual_dir, tmp_path):
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(manual_dir / "CamSDD", moved)
    keys_here = [
        f.key for f in camsdd_layout.scan_camsdd(manual_dir / "CamSDD").splits["test"].files
    ]
    keys_there = [f.key for f in camsdd_layout.scan_camsdd(moved).splits["test"].files]
    assert keys_here == keys_there
    assert keys_here[0] == "test/10_Waterfall/gc_dam4.jpg"
    assert all(str(tmp_path) not in key for key in keys_here)


def test_odd_entries_are_ignored_with_a_reason(manual_dir, photo_bytes):
    root = manual_dir / "CamSDD"
    (root / "test" / "stray.jpg").write_bytes(photo_bytes)
    (root / "test" / "1_Portrait" / "raw").mkdir()
    (root / "test" / "1_Portrait" / "._mpl_grace_hopper.jpg").write_bytes(b"\x00\x05\x16\x07")
    (root / "test" / "1_Portrait" / "notes.txt").write_text("shot on a phone")
    (root / "test" / "1_Portrait" / "UPPER.JPG").write_bytes(photo_bytes)
    scan = camsdd_layout.scan_camsdd(root)
    ignored = dict(scan.splits["test"].ignored)
    assert ignored == {
        "test/stray.jpg": "not inside a class folder",
        "test/1_Portrait/raw/": "nested folder inside a class folder",
        "test/1_Portrait/._mpl_grace_hopper.jpg": "hidden or archiver file",
        "test/1_Portrait/notes.txt": "not an image file (.txt)",
    }
    assert "UPPER.JPG" in [f.file_name for f in scan.splits["test"].files]


def test_missing_manual_dir_explains_how_to_get_the_data(tmp_path):
    with pytest.raises(CamsddLayoutError) as error:
        camsdd_layout.find_camsdd_root(tmp_path / "nope")
    message = str(error.value)
    assert "does not exist" in message
    assert "CamSDD.zip" in message and "camsdd.html" in message
    assert "training/1_Portrait" in message


def test_folder_without_camsdd_lists_what_it_holds(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "README.txt").write_text("hi")
    with pytest.raises(CamsddLayoutError) as error:
        camsdd_layout.find_camsdd_root(tmp_path)
    message = str(error.value)
    assert "No CamSDD data" in message
    assert "Found: README.txt, photos/" in message
    assert "Expected layout" in message


def test_missing_split_is_named(manual_dir):
    shutil.rmtree(manual_dir / "CamSDD" / "validation")
    with pytest.raises(CamsddLayoutError, match=r"lacks validation/"):
        camsdd_layout.find_camsdd_root(manual_dir)


def test_two_roots_are_ambiguous(manual_dir):
    shutil.copytree(manual_dir / "CamSDD", manual_dir / "CamSDD-copy")
    with pytest.raises(CamsddLayoutError, match="Several CamSDD roots"):
        camsdd_layout.find_camsdd_root(manual_dir)


def test_split_folder_aliases_but_not_both(manual_dir):
    root = manual_dir / "CamSDD"
    (root / "training").rename(root / "train")
    assert camsdd_layout.scan_camsdd(root).splits["train"].folder == "train"
    (root / "training").mkdir()
    with pytest.raises(CamsddLayoutError, match="both training/ and train/"):
        camsdd_layout.scan_camsdd(root)


def test_every_unknown_class_folder_is_rejected_by_name(manual_dir):
    root = manual_dir / "CamSDD"
    (root / "training" / "10_waterfall").mkdir()
    (root / "test" / "Selfies").mkdir()
    with pytest.raises(CamsddLayoutError) as error:
        camsdd_layout.scan_camsdd(root)
    message = str(error.value)
    assert "training/10_waterfall: unknown CamSDD class folder '10_waterfall'" in message
    assert "(did you mean '10_Waterfall'?)" in message
    assert "test/Selfies" in message


def _touch_official_tree(root: Path, train_total: int) -> None:
    """Empty files named like images: the scan never opens them."""
    for folder in ("validation", "test"):
        for class_folder in classes.CLASS_FOLDERS:
            directory = root / folder / class_folder
            directory.mkdir(parents=True)
            for i in range(20):
                (directory / f"{i}.jpg").touch()
    for i in range(train_total):
        directory = root / "training" / classes.CLASS_FOLDERS[i % 30]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{i}.jpg").touch()


def test_official_counts_give_no_warning(tmp_path):
    _touch_official_tree(tmp_path, 9_897)
    scan = camsdd_layout.scan_camsdd(tmp_path)
    assert {s: len(v.files) for s, v in scan.splits.items()} == camsdd_layout.OFFICIAL_COUNTS
    assert scan.count_warnings() == []


def test_counts_that_differ_from_the_release_are_reported(tmp_path):
    _touch_official_tree(tmp_path, 9_898)
    (tmp_path / "test" / "4_Dog" / "0.jpg").unlink()
    for f in (tmp_path / "validation" / "13_Underwater").iterdir():
        f.unlink()
    warnings = camsdd_layout.scan_camsdd(tmp_path).count_warnings()
    assert "train: 9,898 images, the official CamSDD release has 9,897 (1 more)" in warnings
    assert "test: 599 images, the official CamSDD release has 600 (1 fewer)" in warnings
    assert "test: classes without the official 20 images: 4_Dog=19" in warnings
    assert "validation: no images for 1 class: 13_Underwater" in warnings

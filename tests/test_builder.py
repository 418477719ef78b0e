"""The camsdd TFDS builder, built for real with Beam on bad and good trees."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from pipeline.core import images, variants
from pipeline.stages import options as beam_options
from pipeline.store import camsdd_layout
from tfds_camsdd.camsdd import build_report, camsdd_dataset_builder

from .helpers import CAT_JPEG


def build(manual_dir: Path, data_dir: Path, config=None) -> tfds.core.DatasetBuilder:
    builder = camsdd_dataset_builder.Builder(data_dir=str(data_dir), config=config)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir),
            beam_options=beam.options.pipeline_options.PipelineOptions(
                [f"--runner={beam_options.LOCAL_RUNNER}"]
            ),
        )
    )
    return builder


def examples(builder, split: str) -> list[dict]:
    return list(tfds.as_numpy(builder.as_dataset(split=split)))


def _plant_bad_images(root: Path, photo_bytes: bytes) -> None:
    dog = root / "training" / "4_Dog"
    dog.mkdir()
    (dog / "truncated.jpg").write_bytes(photo_bytes[: len(photo_bytes) // 3])
    (dog / "html.jpg").write_bytes(b"<html>Forbidden</html>")
    cat = Image.open(io.BytesIO(CAT_JPEG.read_bytes()))
    buffer = io.BytesIO()
    cat.resize((720, 480)).save(buffer, "JPEG", quality=90)
    (root / "training" / "1_Portrait" / "big.jpg").write_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    cat.convert("L").save(buffer, "PNG")
    (root / "test" / "1_Portrait" / "gray.png").write_bytes(buffer.getvalue())


def test_default_policy_skips_and_repairs_and_reports_each_file(
    manual_dir, tmp_path, photo_bytes, monkeypatch
):
    monkeypatch.delenv(camsdd_dataset_builder.POLICY_ENV, raising=False)
    _plant_bad_images(manual_dir / "CamSDD", photo_bytes)
    builder = build(manual_dir, tmp_path / "tfds")

    report = build_report.load(builder.data_dir)
    assert report["invalid_image_policy"] == "report"
    assert {(s["path"], s["reason"]) for s in report["skipped"]} == {
        ("training/4_Dog/truncated.jpg", "corrupt"),
        ("training/4_Dog/html.jpg", "not_an_image"),
    }
    assert report["repaired"] == [
        {"path": "test/1_Portrait/gray.png", "reason": "not_jpeg:PNG,not_rgb:L"},
        {"path": "training/1_Portrait/big.jpg", "reason": "wrong_size:720x480"},
    ]
    train = report["splits"]["train"]
    # Nothing lost: found = written + skipped, per split and per class.
    assert (train["images_found"], train["examples_written"], train["skipped"]) == (7, 5, 2)
    assert train["class_counts"]["4_Dog"] == 0
    assert {e["path"] for e in report["ignored"]} == {
        "training/.DS_Store",
        "training/9_Mountain/Thumbs.db",
    }
    assert builder.info.splits["train"].num_examples == 5
    assert builder.info.splits["test"].num_examples == 4

    test_examples = {e["id"].decode(): e for e in examples(builder, "test")}
    gray = test_examples["test/1_Portrait/gray.png"]
    assert gray["image"].shape == (384, 576, 3) and gray["image"].dtype == np.uint8
    assert gray["file_name"] == b"gray.png"
    assert not (builder.data_path / "build_issues-train.jsonl").exists()


def test_fail_policy_stops_at_the_named_file(manual_dir, tmp_path, photo_bytes, monkeypatch):
    monkeypatch.setenv(camsdd_dataset_builder.POLICY_ENV, "fail")
    dog = manual_dir / "CamSDD" / "training" / "4_Dog"
    dog.mkdir()
    (dog / "truncated.jpg").write_bytes(photo_bytes[:5000])
    with pytest.raises(Exception, match=r"training/4_Dog/truncated.jpg: cannot be used") as error:
        build(manual_dir, tmp_path / "tfds")
    assert "CAMSDD_INVALID_IMAGE_POLICY=fail" in str(error.value)
    assert not list((tmp_path / "tfds").rglob("dataset_info.json"))


def test_fail_policy_also_refuses_a_wrong_size(manual_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(camsdd_dataset_builder.POLICY_ENV, "FAIL")
    Image.new("RGB", (640, 480), "white").save(
        manual_dir / "CamSDD" / "validation" / "9_Mountain" / "vga.jpg"
    )
    with pytest.raises(Exception, match=r"validation/9_Mountain/vga.jpg: is not a 576x384"):
        build(manual_dir, tmp_path / "tfds")


def test_unknown_policy_is_a_clear_error(manual_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(camsdd_dataset_builder.POLICY_ENV, "ignore")
    with pytest.raises(ValueError, match=r"CAMSDD_INVALID_IMAGE_POLICY='ignore' is not a policy"):
        build(manual_dir, tmp_path / "tfds")


def test_labels_follow_the_numeric_prefix_unlike_image_folder(manual_dir, tmp_path):
    builder = build(manual_dir, tmp_path / "tfds")
    names = builder.info.features["label"].names
    assert names[:3] == ["Portrait", "Group_portrait", "Kids"] and names[9] == "Waterfall"
    for example in examples(builder, "train") + examples(builder, "validation"):
        class_folder = example["id"].decode().split("/")[1]
        assert example["label"] == int(class_folder.split("_")[0]) - 1
    waterfall = [e for e in examples(builder, "train") if b"10_Waterfall" in e["id"]]
    assert [e["label"] for e in waterfall] == [9]
    # tfds.ImageFolder sorts folder names as strings: 10_Waterfall becomes label 0.
    folder = tfds.ImageFolder(str(manual_dir / "CamSDD"))
    assert folder.info.features["label"].names[0] == "10_Waterfall"


def test_missing_manual_dir_gives_the_download_instructions(tmp_path):
    with pytest.raises(AssertionError) as error:
        build(tmp_path / "not-there", tmp_path / "tfds")
    assert "does not exist or is empty" in str(error.value)
    assert "CamSDD.zip" in str(error.value)


def test_manual_dir_without_camsdd_is_explained(tmp_path):
    (tmp_path / "manual" / "photos").mkdir(parents=True)
    with pytest.raises(camsdd_layout.CamsddLayoutError, match=r"Found: photos/"):
        build(tmp_path / "manual", tmp_path / "tfds")


def test_unknown_class_folder_stops_the_build(manual_dir, tmp_path):
    (manual_dir / "CamSDD" / "test" / "31_Drones").mkdir()
    with pytest.raises(camsdd_layout.CamsddLayoutError, match=r"test/31_Drones"):
        build(manual_dir, tmp_path / "tfds")


def test_empty_split_is_refused(manual_dir, tmp_path):
    shutil.rmtree(manual_dir / "CamSDD" / "validation")
    (manual_dir / "CamSDD" / "validation").mkdir()
    with pytest.raises(camsdd_layout.CamsddLayoutError, match=r"validation/ holds no images"):
        build(manual_dir, tmp_path / "tfds")


def test_builds_from_the_release_zip(manual_dir, tmp_path):
    archive = tmp_path / "zipped" / "CamSDD.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((manual_dir / "CamSDD").rglob("*")):
            zf.write(path, path.relative_to(manual_dir).as_posix())
    builder = build(archive.parent, tmp_path / "tfds")
    counts = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert counts == {"train": 4, "validation": 2, "test": 3}
    report = json.loads((builder.data_path / build_report.REPORT_FILE).read_text())
    assert report["splits"]["test"]["examples_written"] == 3


def _extra_manifest(path: Path, rows: list[tuple[str, Path, str]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "key": [k for k, _, _ in rows],
            "status": ["kept"] * len(rows),
            "image_path": [str(p) for _, p, _ in rows],
            "label": [label for _, _, label in rows],
        }
    )
    pq.write_table(table, path)
    return path


def _extra_config(manifest_path: Path, name: str):
    return camsdd_dataset_builder.CamsddConfig(
        name=name, extra_splits=("extra_pseudo",), extra_manifest=str(manifest_path)
    )


def test_extra_split_is_built_from_a_manifest(manual_dir, tmp_path):
    cat = tmp_path / "cat.jpg"
    cat.write_bytes(images.encode_jpeg(images.fit_to_size(Image.open(CAT_JPEG))))
    manifest_path = _extra_manifest(tmp_path / "extra.parquet", [("urls-cat", cat, "5_Cat")])
    builder = build(manual_dir, tmp_path / "data", _extra_config(manifest_path, "extra_ok"))
    (example,) = examples(builder, "extra_pseudo")
    assert example["id"].decode() == "extra_pseudo/5_Cat/urls-cat" and example["label"] == 4
    train_plus_extra = builder.as_dataset(split="train+extra_pseudo")
    assert len(list(train_plus_extra)) == builder.info.splits["train"].num_examples + 1


def test_build_refuses_an_extra_image_that_leaks_a_test_image(manual_dir, tmp_path):
    scan = camsdd_layout.scan_camsdd(camsdd_layout.find_camsdd_root(manual_dir))
    test_file = scan.splits["test"].files[0]
    # A brighter, re-encoded copy of a test image: what a crawler finds on the web.
    leaked = variants.make_variant(Image.open(test_file.path), "brightness_contrast")
    leak = tmp_path / "leak.jpg"
    leak.write_bytes(images.encode_jpeg(leaked, quality=70))
    manifest_path = _extra_manifest(
        tmp_path / "extra.parquet", [("urls-leak", leak, test_file.class_folder)]
    )
    with pytest.raises(Exception, match=r"urls-leak near-duplicates test example") as error:
        build(manual_dir, tmp_path / "data", _extra_config(manifest_path, "extra_leak"))
    assert test_file.key in str(error.value)
    assert not list((tmp_path / "data").rglob("*extra_pseudo*.tfrecord*"))


def test_extra_config_without_a_manifest_says_what_to_set(manual_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(camsdd_dataset_builder.EXTRA_MANIFEST_ENV, raising=False)
    config = camsdd_dataset_builder.CamsddConfig(name="extra_none", extra_splits=("extra_pseudo",))
    with pytest.raises(ValueError, match=camsdd_dataset_builder.EXTRA_MANIFEST_ENV):
        build(manual_dir, tmp_path / "data", config)


DUMMY_DATA = Path(camsdd_dataset_builder.__file__).parent / "dummy_data"


def test_pseudo_config_carries_provenance_and_no_extra_image_equals_an_official_one(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(camsdd_dataset_builder.EXTRA_MANIFEST_ENV, str(DUMMY_DATA / "pseudolabel"))
    builder = build(DUMMY_DATA, tmp_path / "data", "pseudo")
    extra = examples(builder, "extra_pseudo")
    # The dropped row of the manifest is not built; the kept rows keep their provenance.
    assert sorted(e["id"].decode() for e in extra) == [
        "extra_pseudo/13_Underwater/urls-cand_003",
        "extra_pseudo/14_Architecture/urls-cand_007",
    ]
    for e in extra:
        assert e["soft_label"].shape == (30,) and e["soft_label"].argmax() == e["label"]
        assert e["confidence"] == pytest.approx(e["soft_label"].max())
        assert e["license"] and e["author"] and e["url"].decode().startswith("http")
        assert e["query_class"].decode().endswith(("Underwater", "Architecture"))
    official = [e for split in ("train", "validation", "test") for e in examples(builder, split)]
    for e in official:  # one-hot soft labels and the dataset's own license
        assert e["confidence"] == 1.0 and e["soft_label"][e["label"]] == 1.0
        assert e["license"].decode() == "CC BY-NC-SA 4.0"
    # Pixel-level overlap check: no extra image equals a train, validation or test image.
    digests = {hashlib.sha256(e["image"].tobytes()).hexdigest() for e in official}
    assert not {hashlib.sha256(e["image"].tobytes()).hexdigest() for e in extra} & digests
    both = tfds.load("camsdd/pseudo", split="train+extra_pseudo", data_dir=str(tmp_path / "data"))
    assert len(list(both)) == 4 + 2


def test_plain_tfds_build_names_the_missing_manifest_and_the_official_only_option(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(camsdd_dataset_builder.EXTRA_MANIFEST_ENV, raising=False)
    with pytest.raises(ValueError, match="--config official"):
        build(DUMMY_DATA, tmp_path / "data", "pseudo")


def test_extra_manifest_directory_uses_its_newest_complete_run(tmp_path):
    folder = tmp_path / "pseudolabel"
    shutil.copytree(DUMMY_DATA / "pseudolabel", folder)
    (only,) = folder.glob("manifest-*.parquet")
    # An older complete run and a newer half-written one are both ignored.
    shutil.copy(only, folder / "manifest-20200101T000000-aaaaaa-00000-of-00001.parquet")
    shutil.copy(only, folder / "manifest-20991231T000000-bbbbbb-00000-of-00002.parquet")
    assert camsdd_dataset_builder.extra_manifest_paths(str(folder)) == [str(only)]
    rows = camsdd_dataset_builder.read_extra_manifest(str(folder))
    assert [Path(r["image_path"]).parent for r in rows] == [folder / "images"] * 2


def _pseudolabel_run(folder: Path, run_id: str) -> Path:
    """A copy of the dummy pseudolabel run under ``run_id`` (images shared)."""
    (only,) = (DUMMY_DATA / "pseudolabel").glob("manifest-*.parquet")
    target = folder / f"manifest-{run_id}-00000-of-00001.parquet"
    shutil.copy(only, target)
    return target


def test_extra_manifest_mistakes_each_name_the_problem(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    error = camsdd_dataset_builder.ExtraManifestError
    with pytest.raises(error, match="no such file"):
        camsdd_dataset_builder.read_extra_manifest(str(tmp_path / "nothing.parquet"))
    (tmp_path / "notes.parquet").write_text("key,status\n")
    with pytest.raises(error, match=r"notes.parquet is not a readable Parquet manifest"):
        camsdd_dataset_builder.read_extra_manifest(str(tmp_path / "notes.parquet"))
    # Two runs matched by one glob would count every row twice.
    work = tmp_path / "W"
    shutil.copytree(DUMMY_DATA / "pseudolabel", work / "pseudolabel")
    _pseudolabel_run(work / "pseudolabel", "20300101T000000-cccccc")
    with pytest.raises(error, match="matches shards of 2 runs"):
        camsdd_dataset_builder.read_extra_manifest(str(work / "pseudolabel" / "manifest-*.parquet"))
    # Missing images: every one is listed, not just the first.
    for image in (work / "pseudolabel" / "images").iterdir():
        image.unlink()
    with pytest.raises(error, match="2 of 2 kept images are missing") as caught:
        camsdd_dataset_builder.read_extra_manifest(str(work / "pseudolabel"))
    assert "cand_003.jpg" in str(caught.value) and "cand_007.jpg" in str(caught.value)
    # A run that kept nothing: no extra split to build, said before TFDS starts.
    table = pq.read_table(next((work / "pseudolabel").glob("manifest-2030*.parquet")))
    dropped = table.set_column(1, "status", pa.array(["dropped"] * table.num_rows))
    for path in (work / "pseudolabel").glob("manifest-*.parquet"):
        path.unlink()
    pq.write_table(dropped, _pseudolabel_run(work / "pseudolabel", "20300101T000000-cccccc"))
    with pytest.raises(error, match="keeps no image"):
        camsdd_dataset_builder.read_extra_manifest(str(work / "pseudolabel"))


def test_build_refuses_a_mirrored_copy_of_a_test_image(manual_dir, tmp_path):
    scan = camsdd_layout.scan_camsdd(camsdd_layout.find_camsdd_root(manual_dir))
    test_file = scan.splits["test"].files[0]
    mirrored = tmp_path / "mirror.jpg"
    mirrored.write_bytes(images.encode_jpeg(ImageOps.mirror(Image.open(test_file.path)), 80))
    manifest_path = _extra_manifest(
        tmp_path / "extra.parquet", [("urls-mirror", mirrored, test_file.class_folder)]
    )
    with pytest.raises(Exception, match=r"urls-mirror near-duplicates test example"):
        build(manual_dir, tmp_path / "data", _extra_config(manifest_path, "extra_mirror"))


def test_pseudo_build_report_records_the_extra_split_and_its_source(tmp_path, monkeypatch):
    pointer = str(DUMMY_DATA / "pseudolabel")
    monkeypatch.setenv(camsdd_dataset_builder.EXTRA_MANIFEST_ENV, pointer)
    builder = build(DUMMY_DATA, tmp_path / "data", "pseudo")
    report = json.loads((builder.data_path / build_report.REPORT_FILE).read_text())
    extra = report["extra"]["extra_pseudo"]
    assert extra["manifest"] == pointer and extra["run_id"] == "20261124T000000-000000"
    assert extra["kept_rows"] == extra["examples_written"] == 2
    assert extra["manifest_shards"][0].endswith("-00000-of-00001.parquet")

"""The commands a user types, run as subprocesses: tfds build (both ways), camsdd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tensorflow_datasets as tfds

from pipeline import beam_options, manifest

from .conftest import DEMO_CAMSDD, DUMMY_DATA, REPO

BIN = Path(sys.executable).parent
LOCAL = f"--beam_pipeline_options={beam_options.local_options()}"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    env = {k: v for k, v in env.items() if v}  # an empty value unsets
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def tfds_build(
    manual_dir: Path,
    data_dir: Path,
    *,
    cwd: Path,
    imports: bool = True,
    local=True,
    config: str | None = "official",
    env: dict[str, str] | None = None,
):
    """`tfds build camsdd ...` as a user types it, with the venv's `tfds`."""
    args = [str(BIN / "tfds"), "build", "camsdd"]
    args += ["--imports", "tfds_camsdd"] if imports else []
    args += ["--manual_dir", str(manual_dir), "--data_dir", str(data_dir)]
    args += ["--config", config] if config else []
    return run(args + ([LOCAL] if local else []), cwd=cwd, env=env)


def split_counts(data_dir: Path) -> dict[str, int]:
    builder = tfds.builder_from_directory(str(data_dir / "camsdd" / "official" / "1.1.0"))
    return {name: split.num_examples for name, split in builder.info.splits.items()}


def test_tfds_build_with_imports_from_anywhere(tmp_path):
    result = tfds_build(DUMMY_DATA, tmp_path / "tfds", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading dataset camsdd from imports: tfds_camsdd.camsdd" in result.stdout
    assert split_counts(tmp_path / "tfds") == {"train": 4, "validation": 2, "test": 3}
    assert (tmp_path / "tfds" / "camsdd" / "official" / "1.1.0" / "build_report.json").exists()


def test_tfds_build_from_inside_the_builder_package(tmp_path):
    result = tfds_build(DUMMY_DATA, tmp_path / "tfds", cwd=REPO / "tfds_camsdd", imports=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading dataset camsdd from path:" in result.stdout
    assert split_counts(tmp_path / "tfds") == {"train": 4, "validation": 2, "test": 3}


def test_plain_tfds_build_builds_every_config_and_pseudo_needs_its_manifest(tmp_path):
    """No --config: TFDS builds official, then pseudo, which says what to set."""
    unset = {"CAMSDD_EXTRA_MANIFEST": ""}
    result = tfds_build(DUMMY_DATA, tmp_path / "tfds", cwd=tmp_path, config=None, env=unset)
    assert result.returncode != 0
    assert "set CAMSDD_EXTRA_MANIFEST" in result.stderr and "--config official" in result.stderr
    assert split_counts(tmp_path / "tfds") == {"train": 4, "validation": 2, "test": 3}

    with_extra = {"CAMSDD_EXTRA_MANIFEST": str(DUMMY_DATA / "pseudolabel")}
    result = tfds_build(DUMMY_DATA, tmp_path / "tfds", cwd=tmp_path, config=None, env=with_extra)
    assert result.returncode == 0, result.stderr[-3000:]
    pseudo = tfds.builder_from_directory(str(tmp_path / "tfds" / "camsdd" / "pseudo" / "1.1.0"))
    assert pseudo.info.splits["extra_pseudo"].num_examples == 2


def test_tfds_build_without_camsdd_tells_the_user_what_to_do(tmp_path):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "CamSDD.tar").write_bytes(b"not what we want")
    result = tfds_build(tmp_path / "downloads", tmp_path / "tfds", cwd=tmp_path, local=False)
    assert result.returncode != 0
    assert "No CamSDD data in" in result.stderr and "Found: CamSDD.tar" in result.stderr
    assert "people.ee.ethz.ch/~ihnatova/camsdd.html" in result.stderr


def test_camsdd_check_reports_counts_and_fails_on_bad_trees(tmp_path):
    result = run([str(BIN / "camsdd"), "check", str(DEMO_CAMSDD)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train          43 images in training/ (19 classes)" in result.stdout
    assert "warning: test: 16 images, the official CamSDD release has 600" in result.stdout

    (tmp_path / "bad" / "training" / "Dogs").mkdir(parents=True)
    for split in ("validation", "test"):
        (tmp_path / "bad" / split).mkdir()
    result = run([str(BIN / "camsdd"), "check", str(tmp_path / "bad")], cwd=tmp_path)
    assert result.returncode == 2
    assert "training/Dogs: unknown CamSDD class folder 'Dogs'" in result.stderr


def test_demo_builds_prints_counts_and_loads_uint8_images(tmp_path):
    result = run([str(BIN / "camsdd"), "demo", "--work", str(tmp_path / "work")], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    assert "tfds build camsdd --imports tfds_camsdd" in out
    # Crawl + fetch of the candidate pool over loopback, through the real commands.
    assert "crawl 'demo-urls': 62 records, 62 kept" in out
    assert "62 candidates -> 56 kept, 6 dropped (reconciled)" in out
    fetched = manifest.read_stage(str(tmp_path / "work"), "fetch").to_pylist()
    assert len(fetched) == 62 and all(r["url"].startswith("http://127.0.0.1:") for r in fetched)
    # Embed + dedup: every planted duplicate caught (tests/test_dedup_stage.py checks which).
    assert "embed (efficientnet_lite0-224x336): 123 embedded" in out
    assert "56 candidates -> 42 kept, 14 dropped (reconciled)" in out
    assert "duplicate clusters among candidates: 3" in out
    for row in fetched:
        if row["status"] == "kept":
            assert Path(row["image_path"]).is_file()
    assert "split counts: test=16, train=43, validation=8" in out
    assert "train       43 examples, each uint8 (384, 576, 3)" in out
    assert "  train           43       43         0        0" in out  # the report table
    assert split_counts(tmp_path / "work" / "tfds") == {"train": 43, "validation": 8, "test": 16}
    # Pseudo-labels: the stage's kept rows are the extra_pseudo split, measured on the truth.
    labeled = manifest.read_stage(str(tmp_path / "work"), "pseudolabel").to_pylist()
    kept = [r for r in labeled if r["status"] == "kept"]
    assert len(labeled) == 42 and f"42 candidates -> {len(kept)} kept" in out
    assert "(c) K-fold rule, calibrated per-class thresholds" in out
    precision_c = float(out.split("(c) K-fold rule")[1].split("precision ")[1].split(",")[0])
    assert kept and precision_c >= 0.95
    assert all(r["license"] and r["author"] for r in kept)  # credits carried from the URL list
    pseudo = tfds.builder_from_directory(
        str(tmp_path / "work" / "tfds" / "camsdd" / "pseudo" / "1.1.0")
    )
    assert pseudo.info.splits["extra_pseudo"].num_examples == len(kept)
    assert f"train+extra_pseudo {43 + len(kept)} examples" in out
    # The student, with and without extra_pseudo: trained, quantized, evaluated.
    models = tmp_path / "work" / "models" / "ablation"
    ablation = json.loads((models / "ablation.json").read_text())
    arms = ablation["arms"]
    assert arms["without"]["train_examples"] == 43
    assert arms["with"]["train_examples"] == 43 + len(kept)
    assert arms["with"]["images_seen"] == arms["without"]["images_seen"]  # same budget
    for arm in ("without", "with"):
        folder = models / f"{arm}_extra"
        quantized = json.loads((folder / "quantize.json").read_text())
        assert quantized["integer_only"]["input"]["dtype"] == "uint8"
        report = json.loads((folder / "evaluation" / "model_int8" / "report.json").read_text())
        assert report["integer_only"] and report["splits"]["test"]["examples"] == 16
        assert (folder / "evaluation" / "model_int8" / "confusion_test.png").is_file()
        assert f"{folder}/model_int8.tflite:" in out
    assert "with - without extra_pseudo, int8 test: top-1" in out

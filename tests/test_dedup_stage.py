"""camsdd embed, dedup, pseudolabel: real Beam pipelines on the demo pool, checked on its truth."""

import csv
import dataclasses
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import cli
from pipeline.cli import demo
from pipeline.core import classes, pseudolabel
from pipeline.demo_data import CAMSDD_ROOT, CANDIDATES_DIR
from pipeline.models import teacher, teacher_runtime
from pipeline.stages import dedup as dedup_stage
from pipeline.stages import embed as embed_stage
from pipeline.stages import pseudolabel as pseudolabel_stage
from pipeline.store import embedding_cache as embeddings
from pipeline.store import image_store, manifest

SPLIT_OF_FOLDER = {
    "training": "duplicate_of_train",
    "validation": "leak:validation",
    "test": "leak:test",
}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dedup") / "work")
    assert demo.crawl_and_fetch(path) == 0
    summary = embed_stage.run_embed(path, str(CAMSDD_ROOT))
    assert summary["embedded"] == 56 + 67 and summary["unreadable"] == 0
    return path


def _truth_by_key(work):
    with open(CANDIDATES_DIR / "truth.csv") as handle:
        truth = {r["file"]: r for r in csv.DictReader(handle)}
    fetched = manifest.read_stage(work, "fetch").to_pylist()
    return {r["key"]: truth[re.sub(r"^https?://[^/]+/", "", r["url"])] for r in fetched}, {
        re.sub(r"^https?://[^/]+/", "", r["url"]): r["key"] for r in fetched
    }


def test_every_planted_duplicate_is_caught_and_nothing_else(work):
    report = dedup_stage.run_dedup(work, str(CAMSDD_ROOT))
    assert report["reconciled"] and report["inputs"] == 56
    rows = {r["key"]: r for r in manifest.read_stage(work, "dedup").to_pylist()}
    truth, key_of_file = _truth_by_key(work)
    assert set(rows) == {k for k in truth if k in rows} and len(rows) == 56
    originals_in_pool = {
        key_of_file[t["duplicate_of"].removeprefix("candidates/")]
        for t in truth.values()
        if t["duplicate_of"].startswith("candidates/")
    }
    for key, row in rows.items():
        planted = truth[key]
        if key in originals_in_pool:
            assert row["cluster_size"] == 2  # checked with its copy below
        elif planted["kind"] != "near_duplicate":
            assert row["status"] == "kept", (key, planted, row["reason"], row["match_key"])
        elif planted["duplicate_of"].startswith("candidates/"):
            other = key_of_file[planted["duplicate_of"].removeprefix("candidates/")]
            assert row["cluster"] == rows[other]["cluster"] and row["cluster_size"] == 2
            assert {row["status"], rows[other]["status"]} == {"kept", "dropped"}
        else:
            folder, class_folder, name = planted["duplicate_of"].split("/")
            assert row["reason"] == SPLIT_OF_FOLDER[folder], (key, planted)
            assert row["match_key"].endswith(f"/{class_folder}/{name}")
    assert report["dropped_by_reason"] == {
        "leak:test": 4,
        "leak:validation": 4,
        "duplicate_of_train": 3,
        "duplicate_of": 3,
    }
    assert report["cluster_count"] == 3 and len(report["leaks"]) == 11
    with open(report["report_files"][1]) as handle:
        markdown = handle.read()
    assert "leak:test" in markdown and "Duplicate clusters (3)" in markdown
    assert report["contact_sheet"] == "contact_sheet.png"


def test_embeddings_catch_what_hashes_miss(work):
    hashes_only = dedup_stage.run_dedup(
        work, str(CAMSDD_ROOT), dedup_stage.dedup.DedupConfig(embeddings=False)
    )
    assert hashes_only["reconciled"] and hashes_only["embeddings_model"] is None
    kinds = {leak["match_kind"] for leak in hashes_only["leaks"]}
    assert kinds <= {"phash", "sha256"}
    # A mirrored copy is found by the labeled image's mirror pHash; the cropped, rotated
    # and captioned copies only by the teacher's embeddings.
    assert len(hashes_only["leaks"]) < 11
    assert [leak for leak in hashes_only["leaks"] if "gc_machuPicchu" in leak["match_key"]]


def test_rerun_gives_the_same_decisions_and_one_manifest(work):
    first = dedup_stage.run_dedup(work, str(CAMSDD_ROOT))
    second = dedup_stage.run_dedup(work, str(CAMSDD_ROOT))
    columns = ["key", "status", "reason", "cluster"]
    assert manifest.latest_run(work, "dedup")[0] == second["run_id"] != first["run_id"]
    rows = manifest.read_stage(work, "dedup").select(columns).to_pylist()
    assert len(rows) == 56
    assert second["dropped_by_reason"] == first["dropped_by_reason"]


def test_embed_rerun_reuses_the_cache(work):
    summary = embed_stage.run_embed(work, str(CAMSDD_ROOT))
    assert summary["embedded"] == 0 and summary["already_cached"] == 123
    vectors = embeddings.load_vectors(work, teacher.DEFAULT_TEACHER)
    assert len(vectors) == 123 and next(iter(vectors.values())).shape == (1280,)


@pytest.mark.slow
def test_an_ensemble_teacher_embeds_each_backbone_once_and_joins_them(work):
    spec = teacher.TeacherSpec("efficientnet_lite0+mobilenet_v2")
    summary = embed_stage.run_embed(work, str(CAMSDD_ROOT), spec)
    parts = {p["model"]: p for p in summary["parts"]}
    assert parts["efficientnet_lite0-224x336"]["embedded"] == 0  # cached by the fixture
    assert parts["mobilenet_v2-224x336"]["embedded"] == 123 and summary["embedded"] == 123
    again = embed_stage.run_embed(work, str(CAMSDD_ROOT), spec)
    assert again["embedded"] == 0 and again["already_cached"] == 123
    assert [p["embedded"] for p in again["parts"]] == [0, 0]
    joined = embeddings.load_vectors(work, spec)
    lite0, mnv2 = (embeddings.load_vectors(work, part) for part in spec.parts)
    assert set(joined) == set(lite0) == set(mnv2)
    for sha in sorted(joined)[:5]:
        a, b = lite0[sha] / np.linalg.norm(lite0[sha]), mnv2[sha] / np.linalg.norm(mnv2[sha])
        np.testing.assert_allclose(joined[sha], np.concatenate([a, b]) / np.sqrt(2), atol=1e-6)
    assert all(abs(np.linalg.norm(v) - 1) < 1e-5 for v in joined.values())
    # The joined cache is what the Keras ensemble teacher computes in one model.
    photo = next(iter(sorted(Path(CAMSDD_ROOT, "training").rglob("*.jpg"))))
    pixels = image_store.read_pixels(str(photo))
    keras_vector = teacher_runtime.KerasTeacher(spec)(pixels[None])[0]
    cached = joined[hashlib.sha256(photo.read_bytes()).hexdigest()]
    assert float(keras_vector @ cached) / float(np.linalg.norm(keras_vector)) > 0.99999
    # Pseudolabel reads it like any teacher's cache.
    report = pseudolabel_stage.run_pseudolabel(work, str(CAMSDD_ROOT), spec=spec)
    assert report["model"] == spec.model_id and report["reconciled"]


def test_dedup_without_fetch_or_with_a_bad_reference_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["dedup", "--work", str(tmp_path)]) == 2
    assert "camsdd fetch" in capsys.readouterr().err


def test_dedup_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["dedup", "--help"])
    out = capsys.readouterr().out
    for flag in ("--work", "--reference", "--radius", "--min-cosine", "--no-embeddings"):
        assert flag in out


# ------------------------------------------------------------------ pseudolabel (after dedup)


def _deduped(work):
    if manifest.latest_run(work, "dedup") is None:
        dedup_stage.run_dedup(work, str(CAMSDD_ROOT))
    return work


def test_pseudolabel_gives_every_candidate_one_status_by_the_rule(work):
    _deduped(work)
    truth_file = demo.write_demo_truth(work, Path(work) / "inputs" / "truth.csv")
    report = pseudolabel_stage.run_pseudolabel(work, str(CAMSDD_ROOT), truth=str(truth_file))
    rows = manifest.read_stage(work, "pseudolabel").to_pylist()
    dedup_kept = [
        r for r in manifest.read_stage(work, "dedup").to_pylist() if r["status"] == "kept"
    ]
    assert sorted(r["key"] for r in rows) == sorted(r["key"] for r in dedup_kept)
    assert report["reconciled"] and report["inputs"] == len(rows) == 42
    assert report["kept"] + sum(report["reasons"].values()) == 42
    for r in rows:
        assert r["status"] in ("kept", "dropped") and (r["reason"] is None) == (
            r["status"] == "kept"
        )
        assert len(r["soft_label"]) == 30 and abs(sum(r["soft_label"]) - 1) < 1e-3
        assert r["label"] == classes.CLASS_FOLDERS[r["label_index"]]
        delta = report["ood"]["delta"]
        if r["ood_score"] is None or r["ood_score"] > delta:
            first_failure = "out_of_distribution"
        elif not r["heads_agree"]:
            first_failure = "fold_disagreement"
        elif r["reason"] == "prototype_disagreement":
            first_failure = "prototype_disagreement" if r["few_shot"] else "not few-shot"
        elif not r["above_threshold"]:
            first_failure = "low_confidence"
        else:
            first_failure = None
        assert r["reason"] == first_failure, r
        if r["status"] == "kept":
            assert r["confidence"] >= r["threshold"]
            assert r["few_shot"] or len(set(r["head_labels"])) == 1
        if r["few_shot"] and r["threshold"] is not None:  # one prototype-scale threshold
            assert r["threshold"] == pytest.approx(report["few_shot"]["threshold"], abs=1e-4)
    # Open set: off-topic photos (no CamSDD class) are dropped, several of them as
    # out_of_distribution; few-shot classes go through the prototype rule.
    with open(CANDIDATES_DIR / "truth.csv", newline="") as handle:
        truth = {Path(t["file"]).name: t["true_class"] for t in csv.DictReader(handle)}
    off_topic = [r for r in rows if not truth[r["url"].rsplit("/", 1)[-1]]]
    assert off_topic and not any(r["status"] == "kept" for r in off_topic)
    assert sum(r["reason"] == "out_of_distribution" for r in off_topic) >= 3
    assert report["reasons"]["out_of_distribution"] == report["ood"]["dropped"] >= 3
    assert report["few_shot"]["classes"] and "prototype" in report["few_shot"]["rule"]
    assert any(r["reason"] == "prototype_disagreement" for r in rows)
    # Stage and the demo's measurement agree on rule (c); it is precise against the truth.
    measured = demo.measure_pseudolabels(work)["rules"]["c"]
    assert measured["kept"] == report["kept"] > 0 and measured["precision"] >= 0.95
    # The report: OOF metrics, thresholds, label issues, plots.
    stage_dir = Path(work) / "pseudolabel"
    assert report["teacher"]["labeled_images"] == 43
    assert len(report["teacher"]["per_class"]) == 30
    issues = (stage_dir / "label_issues.csv").read_text().splitlines()
    assert len(issues) == 1 + report["label_issues"]["count"]
    for png in ("confidence_histograms.png", "reliability.png", "precision_coverage.png"):
        assert Image.open(stage_dir / png).format == "PNG"
    assert len(pq.read_table(stage_dir / "oof.parquet")) == 43
    markdown = (stage_dir / "report.md").read_text()
    assert "Label issues in the official train set" in markdown
    assert "## Out-of-distribution test" in markdown and "## Few-shot classes" in markdown
    # The curves: from OOF (43 labeled images) and from the truth file (42 candidates).
    assert report["oof_curves"]["candidates"] == 43 and report["truth"]["candidates"] == 42
    assert report["truth"]["default"]["c"]["kept"] == report["kept"]
    assert set(report["truth"]["areas"]) == {"a", "b", "c"}


def test_pseudolabel_cap_query_rule_and_missing_embeddings(work, tmp_path):
    _deduped(work)
    loose = pseudolabel.PseudolabelConfig(target_precision=0.5, threshold_floor=0.0)
    open_rows = {
        r["key"]: r
        for r in (
            pseudolabel_stage.run_pseudolabel(work, str(CAMSDD_ROOT), loose),
            manifest.read_stage(work, "pseudolabel").to_pylist(),
        )[1]
    }
    capped = dataclasses.replace(loose, max_per_class=1, require_query_match=True)
    report = pseudolabel_stage.run_pseudolabel(work, str(CAMSDD_ROOT), capped)
    rows = manifest.read_stage(work, "pseudolabel").to_pylist()
    kept = [r for r in rows if r["status"] == "kept"]
    assert len({r["label"] for r in kept}) == len(kept)  # at most one per class
    for r in rows:
        if r["reason"] == "over_class_cap":
            winner = next(k for k in kept if k["label"] == r["label"])
            assert winner["confidence"] >= r["confidence"]
        if r["reason"] == "query_mismatch":
            assert r["label"] != r["query_class"] and open_rows[r["key"]]["status"] == "kept"
    assert report["reasons"].get("over_class_cap") and report["reasons"].get("query_mismatch")
    assert report["rules"]["label_is_query_class"]["enabled"]

    # A candidate whose embedding is not cached is dropped as not_embedded, not lost.
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    cache = embeddings.cached_paths(str(copy), teacher.DEFAULT_TEACHER)
    missing = rows[0]["sha256"]
    for path in cache:
        table = pq.read_table(path)
        pq.write_table(table.filter(pc.not_equal(table["sha256"], missing)), path)
    report = pseudolabel_stage.run_pseudolabel(str(copy), str(CAMSDD_ROOT))
    assert report["reasons"]["not_embedded"] == 1 and report["reconciled"]
    # Training images without embeddings: a clear error naming the command to run.
    other = teacher.TeacherSpec(input_size=(160, 240))
    with pytest.raises(FileNotFoundError, match="camsdd embed"):
        pseudolabel_stage.run_pseudolabel(str(copy), str(CAMSDD_ROOT), spec=other)


def test_pseudolabel_cli_errors_and_help(tmp_path, capsys):
    assert cli.main(["pseudolabel", "--work", str(tmp_path), "--labeled", str(CAMSDD_ROOT)]) == 2
    assert "camsdd dedup" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["pseudolabel", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--work",
        "--labeled",
        "--folds",
        "--target-precision",
        "--threshold-floor",
        "--min-support",
        "--no-agreement",
        "--query-match",
        "--max-per-class",
        "--regularization",
        "--seed",
        "--teacher",
    ):
        assert flag in out

"""camsdd embed + dedup as real Beam pipelines on the demo pool, checked against its truth."""

import csv
import re

import pytest

from pipeline import cli, dedup_stage, demo, embed_stage, embeddings, manifest, teacher
from pipeline.demo_data import CAMSDD_ROOT, CANDIDATES_DIR

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
    # A mirrored copy has a different pHash: only the teacher's embeddings see it.
    assert len(hashes_only["leaks"]) < 11
    assert not [leak for leak in hashes_only["leaks"] if "gc_machuPicchu" in leak["match_key"]]


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


def test_dedup_without_fetch_or_with_a_bad_reference_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["dedup", "--work", str(tmp_path)]) == 2
    assert "camsdd fetch" in capsys.readouterr().err


def test_dedup_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["dedup", "--help"])
    out = capsys.readouterr().out
    for flag in ("--work", "--reference", "--radius", "--min-cosine", "--no-embeddings"):
        assert flag in out

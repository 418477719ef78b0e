"""The commands a user types, run as subprocesses: tfds build (both ways), camsdd."""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from pipeline.core import quiet
from pipeline.demo_data import DEMO_DIR
from pipeline.stages import options as beam_options
from pipeline.store import manifest

from .helpers import BIN, DEMO_CAMSDD, DUMMY_DATA, REPO, run

ARTIFACTS = REPO / "test-artifacts"

LOCAL = f"--beam_pipeline_options={beam_options.local_options()}"


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
    builder = tfds.builder_from_directory(str(data_dir / "camsdd" / "official" / "1.2.0"))
    return {name: split.num_examples for name, split in builder.info.splits.items()}


def test_tfds_build_with_imports_from_anywhere(tmp_path):
    result = tfds_build(DUMMY_DATA, tmp_path / "tfds", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading dataset camsdd from imports: tfds_camsdd.camsdd" in result.stdout
    assert split_counts(tmp_path / "tfds") == {"train": 4, "validation": 2, "test": 3}
    assert (tmp_path / "tfds" / "camsdd" / "official" / "1.2.0" / "build_report.json").exists()


def test_tfds_build_from_inside_the_builder_package(tmp_path):
    result = tfds_build(DUMMY_DATA, tmp_path / "tfds", cwd=REPO / "tfds_camsdd", imports=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading dataset camsdd from path:" in result.stdout
    assert split_counts(tmp_path / "tfds") == {"train": 4, "validation": 2, "test": 3}


def test_the_bare_build_command_builds_official_and_says_how_to_add_pseudo(tmp_path):
    """`tfds build camsdd --imports tfds_camsdd --manual_dir M`, nothing else, succeeds."""
    unset = {"CAMSDD_EXTRA_MANIFEST": ""}
    args = [str(BIN / "tfds"), "build", "camsdd", "--imports", "tfds_camsdd"]
    args += ["--manual_dir", str(DUMMY_DATA), "--data_dir", str(tmp_path / "tfds")]
    result = run(args, cwd=tmp_path, env=unset)
    assert result.returncode == 0, result.stderr[-3000:]
    assert split_counts(tmp_path / "tfds") == {"train": 4, "validation": 2, "test": 3}
    assert not (tmp_path / "tfds" / "camsdd" / "pseudo").exists()
    output = (result.stdout + result.stderr).splitlines()
    hint = [line for line in output if "is built when its manifest is named" in line]
    assert len(hint) == 1 and "CAMSDD_EXTRA_MANIFEST=W/pseudolabel" in hint[0], hint

    with_extra = {"CAMSDD_EXTRA_MANIFEST": str(DUMMY_DATA / "pseudolabel")}
    result = tfds_build(DUMMY_DATA, tmp_path / "tfds", cwd=tmp_path, config=None, env=with_extra)
    assert result.returncode == 0, result.stderr[-3000:]
    pseudo = tfds.builder_from_directory(str(tmp_path / "tfds" / "camsdd" / "pseudo" / "1.2.0"))
    assert pseudo.info.splits["extra_pseudo"].num_examples == 2


def test_tfds_build_without_camsdd_tells_the_user_what_to_do(tmp_path):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "CamSDD.tar").write_bytes(b"not what we want")
    result = tfds_build(tmp_path / "downloads", tmp_path / "tfds", cwd=tmp_path, local=False)
    assert result.returncode != 0
    assert "No CamSDD data in" in result.stderr and "Found: CamSDD.tar" in result.stderr
    assert "people.ee.ethz.ch/~ihnatova/camsdd.html" in result.stderr


def test_check_reads_a_folder_holding_only_the_release_zip(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with zipfile.ZipFile(manual / "CamSDD.zip", "w") as archive:
        for path in sorted((DUMMY_DATA / "CamSDD").rglob("*")):
            archive.write(path, "CamSDD/" + path.relative_to(DUMMY_DATA / "CamSDD").as_posix())
    result = run([str(BIN / "camsdd"), "check", str(manual)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train           4 images in training/" in result.stdout
    assert not (manual / "CamSDD").exists()  # read in place, nothing extracted


def test_check_fails_wherever_the_build_would_refuse(manual_dir, tmp_path):
    shutil.rmtree(manual_dir / "CamSDD" / "validation")
    (manual_dir / "CamSDD" / "validation").mkdir()  # present, but empty
    result = run([str(BIN / "camsdd"), "check", str(manual_dir)], cwd=tmp_path)
    assert result.returncode == 2
    assert "validation/ holds no images" in result.stderr and "Traceback" not in result.stderr


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


#: What a log of `make demo` must never carry: native library chatter, Beam's warnings,
#: progress-bar redraws, converter output, Keras' per-epoch step lines.
NOISE = [
    quiet.NATIVE_LOG_LINE,
    re.compile(r"yield and return|Resource module|fully_quantize|Generating splits"),
    re.compile(r"\r|^Epoch \d+/\d+$|^\d+/\d+ - \d+s"),
]


@pytest.mark.slow
def test_make_demo_as_typed_from_the_repo_root(tmp_path):
    """`make demo` with a relative WORK, run from the repo root (what a newcomer types)."""
    relative = os.path.relpath(tmp_path / "work", REPO)
    assert not os.path.isabs(relative)
    result = run(["make", "--no-print-directory", "-o", "venv", "demo", f"WORK={relative}"], REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    noise = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(pattern.search(line) for pattern in NOISE)
    ]
    assert not noise, noise[:10]
    assert "epoch 12/12: loss" in out  # one line per epoch instead
    assert "review dataset camsdd-review: 109 samples" in out
    assert "open it: camsdd review --work" in out
    (tmp_path / "moved").mkdir()  # the work dir holds no path of the folder it was run from
    shutil.move(tmp_path / "work", tmp_path / "moved" / "work")
    tmp_path = tmp_path / "moved"
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
        if row["status"] == "kept":  # relative to the work dir, found after the move
            assert not os.path.isabs(row["image_path"])
            assert (tmp_path / "work" / row["image_path"]).is_file()
    assert "camsdd/official: train 43, validation 8, test 16" in out
    assert "train       43 examples, each uint8 (384, 576, 3)" in out
    assert split_counts(tmp_path / "work" / "tfds") == {"train": 43, "validation": 8, "test": 16}
    # Pseudo-labels: the stage's kept rows are the extra_pseudo split, measured on the truth.
    labeled = manifest.read_stage(str(tmp_path / "work"), "pseudolabel").to_pylist()
    kept = [r for r in labeled if r["status"] == "kept"]
    assert len(labeled) == 42 and f"42 candidates -> {len(kept)} kept" in out
    assert "(c) K-fold rule: noise-aware τ_c, open-set, few-shot" in out
    precision_c = float(out.split("(c) K-fold rule")[1].split("precision ")[1].split(",")[0])
    assert kept and precision_c >= 0.95
    assert all(r["license"] and r["author"] for r in kept)  # credits carried from the URL list
    pseudo = tfds.builder_from_directory(
        str(tmp_path / "work" / "tfds" / "camsdd" / "pseudo" / "1.2.0")
    )
    assert pseudo.info.splits["extra_pseudo"].num_examples == len(kept)
    assert f"train+extra_pseudo: {43 + len(kept)} examples" in out
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
        assert f"{relative}/models/ablation/{arm}_extra/model_int8.tflite:" in out
    assert "with - without extra_pseudo, int8 test: top-1" in out
    assert "(8 of 8 stages ran). Report: " in out
    work = tmp_path / "work"
    report_is_the_run_at_a_glance(work, fetched, labeled)

    # Again, from the moved work dir: every stage is up to date.
    again = run(["make", "--no-print-directory", "-o", "venv", "demo", f"WORK={work}"], REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": unchanged since ") == 8
    assert "nothing to do: every stage is up to date" in again.stdout
    # One pseudolabel option changed: pseudolabel and what follows run, nothing before it.
    config = (DEMO_DIR / "demo.toml").read_text()
    for name in ("CamSDD", "candidates", "candidates/url_truth.csv", "candidates/urls.csv"):
        config = config.replace(f'"{name}"', f'"{DEMO_DIR / name}"')
    config = config.replace("[pseudolabel]", "[pseudolabel]\ntarget_precision = 0.9")
    config = config.replace("[ablate]\nenabled = true", "[ablate]\nenabled = false")
    (tmp_path / "changed.toml").write_text(config)
    changed = run([str(BIN / "camsdd"), "run", "--config", str(tmp_path / "changed.toml"),
                   "--work", str(work)], tmp_path)  # fmt: skip
    assert changed.returncode == 0, changed.stderr[-3000:]
    for stage in ("crawl", "fetch", "embed", "dedup"):
        assert f" {stage}: unchanged since " in changed.stdout
    assert "== 5/7 pseudolabel" in changed.stdout and "== 6/7 build" in changed.stdout
    assert "== 7/7 review" in changed.stdout
    assert "--target-precision 0.9" in changed.stdout


def report_is_the_run_at_a_glance(work: Path, fetched: list[dict], labeled: list[dict]) -> None:
    """W/report.html in headless Debian chromium with no network: the funnel's numbers are
    the manifests', every image drew; a screenshot is kept in test-artifacts/."""
    from playwright.sync_api import sync_playwright

    report = work / "report.html"
    assert report.is_file()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requested = []
        page.route("**/*", lambda r: (requested.append(r.request.url), r.continue_())
                   if r.request.url.startswith("file://") else r.abort())  # fmt: skip
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        funnel = page.eval_on_selector_all(
            "table.funnel tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))"
        )
        images = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
        text = page.inner_text("body")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    header, rows = funnel[0], {r[0]: r for r in funnel[1:]}
    column = {name: i for i, name in enumerate(header)}
    fetch_kept = sum(r["status"] == "kept" for r in fetched)
    assert rows["fetch"][column["in"]] == str(len(fetched))
    assert rows["fetch"][column["kept"]] == str(fetch_kept)
    assert rows["dedup"][column["in"]] == str(fetch_kept)
    assert rows["pseudolabel"][column["in"]] == str(len(labeled))
    kept = sum(r["status"] == "kept" for r in labeled)
    assert rows["pseudolabel"][column["kept"]] == str(kept)
    assert rows["dedup"][column["leak"]] == "8"  # 4 leak:test + 4 leak:validation
    assert len(images) > 20 and all(images)  # funnel, plots, thumbnails, confusion matrices
    assert len(requested) == 1  # the page itself: every image is inside it
    for heading in ("Duplicates and leaks", "Label issues in the official set", "The student"):
        assert heading in text
    assert "with" in text and "train+extra_pseudo" in text


def _leaky_manifest(work: Path) -> Path:
    """A pseudolabel-shaped manifest whose one kept image is a test image of DUMMY_DATA."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (test_image,) = list((DUMMY_DATA / "CamSDD" / "test" / "1_Portrait").glob("*.jpg"))[:1]
    folder = work / "pseudolabel"
    (folder / "images").mkdir(parents=True)
    shutil.copy(test_image, folder / "images" / "leak.jpg")
    table = pa.table(
        {
            "key": ["urls-leak"],
            "status": ["kept"],
            "image_path": ["pseudolabel/images/leak.jpg"],
            "label": ["1_Portrait"],
        }
    )
    pq.write_table(table, folder / "manifest-20300101T000000-abcdef-00000-of-00001.parquet")
    return folder


@pytest.mark.parametrize("mistake", ["missing_images", "leak"])
def test_a_mistake_in_the_extra_split_is_one_line_under_the_tfds_command(tmp_path, mistake):
    if mistake == "missing_images":
        shutil.copytree(DUMMY_DATA / "pseudolabel", tmp_path / "W" / "pseudolabel")
        shutil.rmtree(tmp_path / "W" / "pseudolabel" / "images")
        expected = "2 of 2 kept images are missing"
    else:
        _leaky_manifest(tmp_path / "W")
        expected = "urls-leak near-duplicates test example"
    env = {"CAMSDD_EXTRA_MANIFEST": str(tmp_path / "W" / "pseudolabel")}
    result = tfds_build(DUMMY_DATA, tmp_path / "tfds", cwd=tmp_path, config="pseudo", env=env)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_check_starts_without_beam_or_tensorflow(tmp_path):
    """A subcommand's module is imported only when it runs: `check` needs neither."""
    code = (
        "import sys; from pipeline import cli; "
        f"code = cli.main(['check', {str(DEMO_CAMSDD)!r}]); "
        "heavy = [m for m in ('apache_beam', 'tensorflow', 'keras') if m in sys.modules]; "
        "print('loaded:', heavy); sys.exit(code)"
    )
    result = run([str(BIN / "python"), "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded: []" in result.stdout

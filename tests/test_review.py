"""Label review in FiftyOne, for real: its own mongod, the App in Debian's chromium, the
corrections flowing through pseudolabel into `tfds build`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.cli import demo
from pipeline.demo_data import CAMSDD_ROOT, DEMO_DIR
from pipeline.store import corrections, manifest

from .helpers import BIN, REPO, camsdd

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """HOME for every command here: the test checks nothing lands in it."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def pseudolabeled(tmp_path_factory) -> Path:
    """The demo pool crawled, fetched, embedded, deduplicated and pseudo-labeled."""
    work = tmp_path_factory.mktemp("review") / "work"
    assert demo.crawl_and_fetch(str(work)) == 0
    assert demo.embed_and_dedup(str(work)) == 0
    assert demo.pseudolabel_step(str(work)) == 0
    return work


def _review(*args: str, home: Path, cwd: Path, timeout: float = 600):
    return camsdd("review", *args, cwd=cwd, env={"HOME": str(home)}, timeout=timeout)


class Reviewer:
    """The FiftyOne Python API on a work dir's review database, as a reviewer uses it."""

    def __init__(self, work: Path):
        self.work = str(work)

    def __enter__(self):
        from labeling_ui import db

        db.isolate(self.work)
        self.database = db.ReviewDatabase(self.work).start()
        import fiftyone as fo

        self.dataset = fo.load_dataset("camsdd-review")
        return self.dataset

    def __exit__(self, *exc):
        self.database.stop()


def _candidates(work: Path) -> list[dict]:
    return manifest.read_stage(str(work), "pseudolabel").to_pylist()


def test_a_review_round_trip_changes_the_next_build(pseudolabeled, home, tmp_path):
    work = pseudolabeled
    result = _review("--work", str(work), "--labeled", str(CAMSDD_ROOT), "--no-app",
                     home=home, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "109 samples (67 official, 42 candidates; 109 added" in result.stdout
    assert "Computing" not in result.stdout + result.stderr  # FiftyOne's chatter held back
    rows = _candidates(work)
    kept = [r for r in rows if r["status"] == "kept"]
    low = [r for r in rows if r["reason"] == "low_confidence"]
    rejected, accepted, relabeled = kept[0]["key"], low[0]["key"], low[1]["key"]

    with Reviewer(work) as dataset:
        from fiftyone import ViewField as F

        assert len(dataset) == 109 and set(dataset.distinct("split")) == {
            "train", "validation", "test", "extra_pseudo", "candidate"
        }  # fmt: skip
        assert dataset.count_values("tags")["extra_pseudo"] == len(kept)
        sample = dataset.one(F("key") == accepted)
        assert sample.pseudo.label == low[0]["label"] and sample.threshold is not None
        assert sample.url.startswith("http://127.0.0.1") and sample.license
        assert dataset.exists("uniqueness").count() == 109  # Brain, from the cached vectors
        assert dataset.exists("mistakenness").count() == 43  # the official training images
        assert {"pseudo-lowest-confidence", "likely-mislabeled-official"} <= set(
            dataset.list_saved_views()
        )
        dataset.select_by("key", [rejected]).tag_samples("reject")
        dataset.select_by("key", [accepted]).tag_samples("accept")
        one = dataset.one(F("key") == relabeled)
        one.label.label = "6_Macro"
        one.save()
        dataset.select_by("key", [kept[1]["key"]]).tag_samples("my-own-note")

    # A re-run after a new pseudolabel run updates in place and keeps the reviewer's work.
    again = _review("--work", str(work), "--labeled", str(CAMSDD_ROOT), "--no-app",
                    home=home, cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0 and "0 added, 109 updated, 0 removed" in again.stdout
    exported = _review("export", "--work", str(work), home=home, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "3 corrections (1 accept, 1 reject, 1 relabel)" in exported.stdout
    assert not list(home.rglob("*")), "nothing may land in the user's home"
    decided = {r["key"]: r for r in corrections.read(str(work))}
    assert decided[relabeled]["new_class"] == "6_Macro"
    assert decided[relabeled]["old_class"] == low[1]["label"]

    code = demo.pseudolabel_step(str(work))
    assert code == 0
    after = {r["key"]: r for r in _candidates(work)}
    assert after[rejected]["status"] == "dropped"
    assert after[rejected]["reason"] == "rejected_in_review"
    assert after[accepted]["status"] == "kept" and after[accepted]["review_action"] == "accept"
    assert after[relabeled]["label"] == "6_Macro" and after[relabeled]["label_source"] == "review"
    assert after[relabeled]["confidence"] == 1.0

    data_dir = tmp_path / "tfds"
    command = demo.tfds_build_command(os.fspath(DEMO_DIR), os.fspath(data_dir))
    env = {**os.environ, "CAMSDD_EXTRA_MANIFEST": str(work / "pseudolabel")}
    built = subprocess.run(command + ["--config", "pseudo"], env=env, capture_output=True,
                           text=True, timeout=900)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    import tensorflow_datasets as tfds

    import tfds_camsdd  # noqa: F401

    extra = {
        e["id"].decode().rsplit("/", 1)[1]: e
        for e in tfds.as_numpy(
            tfds.load("camsdd/pseudo", split="extra_pseudo", data_dir=str(data_dir))
        )
    }
    names = tfds.builder("camsdd/pseudo", data_dir=str(data_dir)).info.features["label"].names
    assert rejected not in extra
    assert names[extra[relabeled]["label"]] == "Macro"
    assert extra[relabeled]["reviewed"].decode() == "relabel"
    assert extra[accepted]["reviewed"].decode() == "accept"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer")


def test_the_app_in_a_real_browser_tags_a_sample(pseudolabeled, home, tmp_path):
    from playwright.sync_api import sync_playwright

    work, port = pseudolabeled, _free_port()
    app = subprocess.Popen(
        [str(BIN / "camsdd"), "review", "--work", str(work), "--labeled", str(CAMSDD_ROOT),
         "--port", str(port)],
        cwd=tmp_path, env={**os.environ, "HOME": str(home)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for(f"http://127.0.0.1:{port}/fiftyone", app)
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--no-first-run", "--disable-sync"],
            )  # fmt: skip
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script(
                "localStorage.setItem('fiftyone-enterprise-tooltip-seen', 'true')"
            )
            origin = f"http://127.0.0.1:{port}"
            # Offline: the two web fonts are the only requests that would leave the machine.
            context.route(
                "**/*", lambda r: r.continue_() if r.request.url.startswith(origin) else r.abort()
            )
            page = context.new_page()
            page.goto(f"{origin}/datasets/camsdd-review")
            page.wait_for_function(
                "() => { const e = document.querySelector('[data-cy=\"entry-counts\"]');"
                " return e && e.innerText.replace(/,/g, '').trim().startsWith('109 sample'); }",
                timeout=120_000,
            )
            page.wait_for_function(  # every mounted tile has drawn its photo
                "() => { const t = document.querySelectorAll('[data-cy=\"looker\"]');"
                " const c = document.querySelectorAll("
                '\'[data-cy="looker"] canvas[canvas-loaded="true"]\');'
                " return t.length > 0 && c.length === t.length; }",
                timeout=120_000,
            )
            page.screenshot(path=str(ARTIFACTS / "review_app.png"))
            tile = page.locator('[data-cy="looker"]').first
            if not tile.locator('input[data-cy="looker-checkbox-input-"]').is_checked():
                tile.hover()
                tile.locator('label[data-cy="looker-checkbox-"]').click()
            # Until the selection registers, the tagger would tag the whole view.
            page.wait_for_selector('[data-cy="action-manage-selected"]', timeout=20_000)
            page.click('[data-cy="action-tag-sample-labels"]')
            page.wait_for_selector('[data-cy="tagger-container"]')
            page.click('[data-cy="tagger-switch-sample"]')
            field = page.locator('input[data-cy="sample-tag-input"]')
            assert "selected" in (field.get_attribute("placeholder") or "")
            field.fill("from-the-browser")
            field.press("Enter")
            page.click('[data-cy="button-Apply"]')
            page.wait_for_selector('[data-cy="tagger-container"]', state="detached", timeout=30_000)
            browser.close()
    finally:
        os.killpg(app.pid, signal.SIGINT)  # what Ctrl-C does in a terminal
        try:
            out, err = app.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)  # never leave the App holding the lock
            app.communicate()
            raise
    assert app.returncode == 0, err[-2000:]
    assert f"App: http://127.0.0.1:{port}/datasets/camsdd-review" in out
    with Reviewer(work) as dataset:
        tagged = dataset.match_tags("from-the-browser").values("key")
        first = dataset.first().key
    assert tagged == [first]  # the tile the browser clicked, read back through Python
    running = subprocess.run(
        ["pgrep", "-f", "--", f"--dbpath {work}/review/db"], capture_output=True
    )
    assert running.returncode == 1, running.stdout  # mongod stopped with the App


def test_two_work_dirs_keep_separate_datasets(pseudolabeled, home, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(pseudolabeled, other, ignore=shutil.ignore_patterns("review"))
    (other / "pseudolabel").joinpath("manifest-extra-marker").write_text("")
    for work in (pseudolabeled, other):
        result = _review("--work", str(work), "--labeled", str(CAMSDD_ROOT), "--no-app",
                         home=home, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
    with Reviewer(other) as dataset:
        dataset.select_by("key", [dataset.first().key]).tag_samples("only-here")
    with Reviewer(pseudolabeled) as dataset:
        assert "only-here" not in dataset.distinct("tags")
    assert (other / "review" / "db").is_dir()
    assert not list(home.rglob("*"))


def test_review_mistakes_are_one_line(pseudolabeled, home, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    checks = []
    result = _review("--work", str(empty), "--labeled", str(CAMSDD_ROOT), "--no-app",
                     home=home, cwd=tmp_path)  # fmt: skip
    checks.append((result, "no pseudolabel run in"))
    fetched_only = tmp_path / "fetched"
    shutil.copytree(
        pseudolabeled, fetched_only, ignore=shutil.ignore_patterns("pseudolabel", "review")
    )
    result = _review("--work", str(fetched_only), "--labeled", str(CAMSDD_ROOT), "--no-app",
                     home=home, cwd=tmp_path)  # fmt: skip
    checks.append((result, "no pseudolabel run in"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        result = _review("--work", str(pseudolabeled), "--labeled", str(CAMSDD_ROOT),
                         "--port", str(port), home=home, cwd=tmp_path)  # fmt: skip
        assert time.monotonic() - started < 60
    checks.append((result, f"port {port} on 127.0.0.1 is in use"))
    blocked = tmp_path / "blocked"
    shutil.copytree(pseudolabeled, blocked, ignore=shutil.ignore_patterns("review"))
    (blocked / "review").mkdir()
    (blocked / "review" / "db").write_text("a file where the database folder goes")
    result = _review("--work", str(blocked), "--labeled", str(CAMSDD_ROOT), "--no-app",
                     home=home, cwd=tmp_path)  # fmt: skip
    checks.append((result, "cannot create the review database folder"))
    assert (blocked / "review" / "db").read_text().startswith("a file")  # nothing lost
    result = _review("export", "--work", str(empty), home=home, cwd=tmp_path)
    checks.append((result, "no review database in"))
    for result, expected in checks:
        assert result.returncode == 2, (expected, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], result.stderr
        assert "Traceback" not in result.stderr


def test_a_corrections_file_with_unknown_classes_or_keys_is_named(pseudolabeled, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(pseudolabeled, work, ignore=shutil.ignore_patterns("review"))
    key = _candidates(work)[0]["key"]
    corrections.write(str(work), [
        {"key": key, "kind": "candidate", "action": "relabel", "old_class": "4_Dog",
         "new_class": "4_Dogs"},
    ])  # fmt: skip
    result = camsdd("pseudolabel", "--work", str(work), "--labeled", str(CAMSDD_ROOT), cwd=tmp_path)
    assert result.returncode == 2
    assert "corrections.parquet: 1 corrections cannot be applied" in result.stderr
    assert "unknown class '4_Dogs'" in result.stderr and "Traceback" not in result.stderr
    corrections.write(str(work), [
        {"key": "urls-never-seen", "kind": "candidate", "action": "reject", "old_class": "4_Dog"},
    ])  # fmt: skip
    result = camsdd("pseudolabel", "--work", str(work), "--labeled", str(CAMSDD_ROOT), cwd=tmp_path)
    assert result.returncode == 2
    assert "1 corrections name candidates this work dir never had: urls-never-seen" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    dedup_dropped = next(
        r["key"] for r in manifest.read_stage(str(work), "dedup").to_pylist()
        if r["status"] == "dropped"
    )  # fmt: skip
    corrections.write(str(work), [
        {"key": dedup_dropped, "kind": "candidate", "action": "reject", "old_class": "4_Dog"},
        {"key": "test/5_Cat/sk_chelsea.jpg", "kind": "official", "action": "reject",
         "old_class": "5_Cat"},
    ])  # fmt: skip
    result = camsdd("pseudolabel", "--work", str(work), "--labeled", str(CAMSDD_ROOT), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"WARNING 1 corrections name candidates no longer here: {dedup_dropped}" in (
        result.stdout
    )
    assert "test/5_Cat/sk_chelsea.jpg" in result.stdout  # an official test image: not applied


def test_samples_inserted_as_documents_are_what_add_samples_stores(pseudolabeled, tmp_path):
    """The fast insert writes FiftyOne's own document format: read back through the public
    API, every field equals what add_samples(to_sample(record)) gives."""
    from labeling_ui import db
    from labeling_ui import records as rec

    records, _, _ = rec.load(str(pseudolabeled), str(CAMSDD_ROOT))
    work = str(tmp_path / "db-work")
    db.isolate(work)
    with db.ReviewDatabase(work):
        import fiftyone as fo

        from labeling_ui import dataset as review_dataset

        ours = review_dataset.open_dataset()
        review_dataset.insert(ours, records)
        theirs = fo.Dataset("add-samples")
        theirs.add_samples([review_dataset.to_sample(r) for r in records], progress=False)

        def rows(dataset):
            found = {}
            for sample in dataset.iter_samples():
                row = sample.to_dict()
                for volatile in ("_id", "id", "_rand", "created_at", "last_modified_at",
                                 "_dataset_id"):  # fmt: skip
                    row.pop(volatile, None)
                for value in row.values():
                    if isinstance(value, dict):
                        value.pop("_id", None)
                found[row["key"]] = row
            return found

        assert len(ours) == len(records) == len(theirs)
        mine, fiftyones = rows(ours), rows(theirs)
        differ = [
            (key, field, mine[key].get(field), fiftyones[key].get(field))
            for key in fiftyones
            for field in set(mine[key]) | set(fiftyones[key])
            if mine[key].get(field) != fiftyones[key].get(field)
        ]
        assert not differ, differ[:5]
        assert ours.count_values("split") == theirs.count_values("split")

"""Every stage and ``tfds build`` on ``gs://``, against a GCS emulator on 127.0.0.1.

The commands run as a user types them (``camsdd … --work gs://bucket/w``, ``tfds build
… --data_dir gs://bucket/tfds``), in their own processes, with the environment of
``tests/gcs.py``; then the emulator's bucket is checked and the dataset is loaded back
with ``tfds.load`` from ``gs://``. Nothing leaves loopback.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from pipeline.cli import demo
from pipeline.demo_data import CAMSDD_ROOT, CANDIDATES_DIR
from pipeline.store import manifest
from tests.gcs import FakeGcs
from tests.helpers import REPO, camsdd, run

SITE = Path(__file__).resolve().parent / "gcs_site"
WORK = "gs://bucket/w"
DATA_DIR = "gs://bucket/tfds"
MANUAL_DIR = "gs://bucket/manual"  # holds CamSDD/, as the README's Dataflow section says

LOAD_BACK = """
import json, sys
import tensorflow_datasets as tfds
import tfds_camsdd  # noqa: F401
counts = {}
for config, split in [("official", "train"), ("official", "validation"),
                      ("official", "test"), ("pseudo", "extra_pseudo")]:
    ds = tfds.load(f"camsdd/{config}", split=split, data_dir=sys.argv[1])
    shapes = {tuple(e["image"].shape) for e in ds.as_numpy_iterator()}
    assert shapes == {(384, 576, 3)}, shapes
    counts[f"{config}/{split}"] = sum(1 for _ in ds)
print(json.dumps(counts))
"""


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    with FakeGcs(tmp_path_factory.mktemp("gcs")) as running:
        yield running


def _env(gcs: FakeGcs, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(SITE), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**gcs.env, "PYTHONPATH": path.rstrip(os.pathsep), **extra}


def _ok(result, what: str) -> str:
    assert result.returncode == 0, (
        f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result.stdout


@pytest.mark.slow
def test_every_stage_and_tfds_build_on_gs(gcs, tmp_path):
    env = _env(gcs)
    bucket = gcs.client().bucket("bucket")
    for image in sorted(CAMSDD_ROOT.rglob("*.jpg")):
        name = f"manual/CamSDD/{image.relative_to(CAMSDD_ROOT).as_posix()}"
        bucket.blob(name).upload_from_filename(str(image))
    with demo.serve_folder(CANDIDATES_DIR) as base_url:
        urls = demo.write_demo_url_list(base_url, tmp_path / "demo-urls.csv")
        crawl = ["crawl", "--work", WORK, "--source", "urls", "--urls", str(urls)]
        _ok(camsdd(*crawl, "--name", "demo-urls", "--no-progress", cwd=tmp_path, env=env), "crawl")
        fetch = ["fetch", "--work", WORK, "--allow-private-addresses"]
        _ok(camsdd(*fetch, cwd=tmp_path, env=env), "fetch")
    labeled = f"{MANUAL_DIR}/CamSDD"
    _ok(camsdd("embed", "--work", WORK, "--reference", labeled, cwd=tmp_path, env=env), "embed")
    _ok(camsdd("dedup", "--work", WORK, "--reference", labeled, cwd=tmp_path, env=env), "dedup")
    pseudo = ["pseudolabel", "--work", WORK, "--labeled", labeled]
    _ok(camsdd(*pseudo, cwd=tmp_path, env=env), "pseudolabel")

    names = gcs.names("bucket", "w/")
    for stage in ("crawl", "fetch", "dedup", "pseudolabel"):
        assert any(n.startswith(f"w/{stage}/") and n.endswith(".parquet") for n in names), stage
    assert any(n.startswith("w/embed/") for n in names)
    fetched = _manifest(gcs, "fetch")
    assert len(fetched) == 62  # one row per crawled candidate
    kept_images = {r["image_path"] for r in fetched if r["status"] == "kept"}
    assert len(kept_images) >= 40  # the demo pool keeps most of its 62 photos
    assert {f"w/{p}" for p in kept_images} <= set(names)  # relative to W, stored on gs://
    pseudo_kept = sum(r["status"] == "kept" for r in _manifest(gcs, "pseudolabel"))
    assert pseudo_kept > 0
    assert not list(tmp_path.glob("gs:*")), "a stage wrote a local folder named gs:"

    build = demo.tfds_build_command(MANUAL_DIR, DATA_DIR)
    _ok(run([*build, "--config", "official"], cwd=tmp_path, env=env), "tfds build official")
    extra = {"CAMSDD_EXTRA_MANIFEST": f"{WORK}/pseudolabel"}
    built = run([*build, "--config", "pseudo"], cwd=tmp_path, env=_env(gcs, **extra))
    _ok(built, "tfds build pseudo")

    tfds_names = gcs.names("bucket", "tfds/")
    assert any("camsdd/official/" in n and "tfrecord" in n for n in tfds_names)
    assert any("camsdd/pseudo/" in n and "extra_pseudo" in n for n in tfds_names)
    loaded = run([sys.executable, "-c", LOAD_BACK, DATA_DIR], cwd=tmp_path, env=env)
    counts = json.loads(_ok(loaded, "tfds.load from gs://").strip().splitlines()[-1])
    demo_tree = {
        f"official/{split}": len(list((CAMSDD_ROOT / folder).glob("*/*.jpg")))
        for split, folder in [("train", "training"), ("validation", "validation"), ("test", "test")]
    }
    assert counts == {**demo_tree, "pseudo/extra_pseudo": pseudo_kept}


def _manifest(gcs: FakeGcs, stage: str, work: str = "w") -> list[dict]:
    """The rows of W/<stage>'s one manifest run, read from the emulator directly."""
    import pyarrow.parquet as pq

    bucket = gcs.client().bucket("bucket")
    shards = [n for n in gcs.names("bucket", f"{work}/{stage}/manifest-") if n.endswith(".parquet")]
    runs = {manifest._SHARD.search(n)["run"] for n in shards}
    assert len(runs) == 1, f"{stage}: {shards}"
    rows = []
    for name in shards:
        rows += pq.read_table(io.BytesIO(bucket.blob(name).download_as_bytes())).to_pylist()
    return rows


@pytest.mark.slow
def test_two_fetches_on_one_gs_work_dir_the_second_refuses_and_a_killed_ones_lock_is_taken_over(
    gcs, server, tmp_path
):
    import signal
    import subprocess
    import time

    from tests.helpers import BIN

    env = {k: v for k, v in {**os.environ, **_env(gcs)}.items() if v}
    work = "gs://bucket/locks"
    listing = tmp_path / "list.csv"
    listing.write_text(f"url,label\n{server.url('/img/photo.jpg')},9_Mountain\n"
                       f"{server.url('/slow/40')},9_Mountain\n")  # fmt: skip
    crawl = ["crawl", "--work", work, "--source", "urls", "--urls", str(listing), "--name", "l"]
    _ok(camsdd(*crawl, cwd=tmp_path, env=_env(gcs)), "crawl")
    fetch = ["fetch", "--work", work, "--allow-private-addresses", "--threads", "2"]

    def start() -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "camsdd"), *fetch, "--timeout", "60"], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)  # fmt: skip

    def wait_for_slow(running: subprocess.Popen, hits: int) -> None:
        deadline = time.monotonic() + 180
        while server.hits.get("/slow/40", 0) < hits or not server.hits.get("/img/photo.jpg"):
            assert running.poll() is None, running.communicate()
            assert time.monotonic() < deadline, "the fetch never reached both URLs"
            time.sleep(0.1)

    first = start()
    wait_for_slow(first, 1)
    second = camsdd(*fetch, cwd=tmp_path, env=_env(gcs))
    assert second.returncode == 2, second.stderr
    assert f"another `camsdd fetch` holds {work}/fetch/.lock (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    os.killpg(first.pid, signal.SIGKILL)  # leaves its lock object behind
    first.communicate(timeout=60)
    names = gcs.names("bucket", "locks/fetch/")
    assert "locks/fetch/.lock" in names
    assert any(n.startswith("locks/fetch/checkpoint/part-") for n in names)  # photo.jpg's row

    third = camsdd(*fetch, "--timeout", "1", cwd=tmp_path, env=_env(gcs))  # dead pid: taken over
    _ok(third, "fetch after a killed one")
    rows = _manifest(gcs, "fetch", "locks")
    assert sorted(r["url"] for r in rows) == sorted(
        [server.url("/img/photo.jpg"), server.url("/slow/40")]
    )
    assert server.hits["/img/photo.jpg"] == 1  # finished by the killed run: not again
    assert "(of which 1 finished by an interrupted run)" in third.stdout
    names = gcs.names("bucket", "locks/fetch/")
    assert "locks/fetch/.lock" not in names
    assert not [n for n in names if "/checkpoint/" in n]


def test_the_emulator_refuses_a_write_whose_generation_precondition_fails(gcs):
    from google.api_core import exceptions

    blob = gcs.client().bucket("bucket").blob("preconditions/object")
    blob.upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):  # exists: not created again
        gcs.client().bucket("bucket").blob(blob.name).upload_from_string(
            b"second", if_generation_match=0
        )
    with pytest.raises(exceptions.PreconditionFailed):  # rewritten since read: refused
        gcs.client().bucket("bucket").blob(blob.name).upload_from_string(
            b"third", if_generation_match=blob.generation + 1
        )
    gcs.client().bucket("bucket").blob(blob.name).upload_from_string(
        b"fourth", if_generation_match=blob.generation
    )
    assert gcs.client().bucket("bucket").blob(blob.name).download_as_bytes() == b"fourth"


def test_runs_racing_for_a_gs_lock_exactly_one_gets_it(gcs, monkeypatch):
    """Eight runs ask for one stage's lock at the same instant: one holds it, seven are
    told who does (the lock object is created under ``ifGenerationMatch=0``)."""
    import threading

    from pipeline.store import workdir

    for name, value in gcs.env.items():
        monkeypatch.setenv(name, value)
    work, racers = "gs://bucket/race", 8
    start, done = threading.Barrier(racers), threading.Barrier(racers)
    winners, refusals = [], []

    def race() -> None:
        start.wait()
        try:
            with workdir.stage_lock(work, "dedup"):
                winners.append(threading.get_ident())
                done.wait(timeout=60)  # held until every other racer has tried
            return
        except workdir.WorkDirError as error:
            refusals.append(str(error))
        done.wait(timeout=60)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(winners) == 1 and len(refusals) == racers - 1, (winners, refusals)
    assert all(f"another `camsdd dedup` holds {work}/dedup/.lock" in r for r in refusals)
    assert gcs.names("bucket", "race/") == []  # released

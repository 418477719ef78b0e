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


def _manifest(gcs: FakeGcs, stage: str) -> list[dict]:
    """The rows of W/<stage>'s one manifest run, read from the emulator directly."""
    import pyarrow.parquet as pq

    bucket = gcs.client().bucket("bucket")
    shards = [n for n in gcs.names("bucket", f"w/{stage}/manifest-") if n.endswith(".parquet")]
    runs = {manifest._SHARD.search(n)["run"] for n in shards}
    assert len(runs) == 1, f"{stage}: {shards}"
    rows = []
    for name in shards:
        rows += pq.read_table(io.BytesIO(bucket.blob(name).download_as_bytes())).to_pylist()
    return rows

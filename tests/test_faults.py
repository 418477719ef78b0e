"""Fetch, embed and dedup killed midway, and a work dir that breaks.

Killed with SIGKILL (nothing runs on the way out) or SIGINT (Ctrl-C), then run again:
every candidate ends with exactly one row (fetch) or one cached vector (embed), what
the killed run finished is not done again, and the counts reconcile; a killed dedup
leaves the previous manifest byte for byte and its rerun decides as an unkilled run.
A work dir that turns read-only midway gives one clear error and leaves the previous
manifest as it was.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from pipeline.demo_data import CAMSDD_ROOT
from pipeline.models import teacher
from pipeline.store import embedding_cache, manifest
from tests.helpers import BIN, LARGE_WEBP, camsdd, dedup_decisions, encode
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.slow  # about a minute each

CANDIDATES = 240
DELAY = 0.04  # seconds per image on the server: the run lasts long enough to be killed


class PacedServer(LoopbackServer):
    def _image(self, name: str) -> tuple[bytes, str]:
        time.sleep(DELAY)
        return super()._image(name)


@pytest.fixture(scope="module")
def pool():
    """CANDIDATES distinct real-photo crops (600x400 JPEGs) served on 127.0.0.1."""
    from PIL import Image

    photo = Image.open(LARGE_WEBP).convert("RGB")  # 1603x1080
    images = {}
    for i in range(CANDIDATES):
        x, y = (i * 37) % 600, (i * 23) % 380
        crop = photo.crop((x, y, x + 900, y + 600)).resize((600, 400))
        images[f"c{i:03d}.jpg"] = (encode(crop, "JPEG", quality=85), "image/jpeg")
    with PacedServer(images) as server:
        yield server


def _crawl(server, tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    names = sorted(server.images)
    listing.write_text(
        "url,label\n" + "".join(f"{server.url('/img/' + n)},12_Landscape\n" for n in names)
    )
    result = camsdd("crawl", "--work", "w", "--source", "urls", "--urls", str(listing),
                    "--name", "pool", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr


FETCH = ["fetch", "--work", "w", "--allow-private-addresses", "--retries", "0", "--threads", "2"]


def _hits(server) -> int:
    return sum(v for k, v in server.hits.items() if k.startswith("/img/"))


@pytest.mark.parametrize("sent", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_fetch_resumes_without_losing_duplicating_or_downloading_again(
    pool, tmp_path, sent
):
    pool.reset()
    _crawl(pool, tmp_path)
    running = subprocess.Popen([str(BIN / "camsdd"), *FETCH], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while _hits(pool) < CANDIDATES // 2:
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, "the fetch never got halfway"
        time.sleep(0.05)
    os.killpg(running.pid, sent)
    _, err = running.communicate(timeout=120)
    assert running.returncode == (-signal.SIGKILL if sent == signal.SIGKILL else 130), err
    time.sleep(1)  # requests already in flight land in the log
    before = dict(pool.hits)
    assert sum(before.values()) < CANDIDATES, "the run finished before it was killed"
    assert manifest.latest_run(str(tmp_path / "w"), "fetch") is None  # no half manifest
    finished = manifest.read_table(manifest.checkpoint_paths(str(tmp_path / "w"), "fetch"))
    assert finished.num_rows >= CANDIDATES // 4  # the killed run's work was kept

    result = camsdd(*FETCH, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = manifest.read_stage(str(tmp_path / "w"), "fetch")
    keys = table.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == CANDIDATES  # none lost, none twice
    assert set(table.column("status").to_pylist()) == {"kept"}
    urls = {pool.url(f"/img/{n}") for n in pool.images}
    assert set(table.column("url").to_pylist()) == urls

    # What the killed run finished was not downloaded again; the rest once.
    done = {row["url"] for row in finished.to_pylist()}
    again = [u for u in done if pool.hits[urllib.parse.urlsplit(u).path] > 1]
    assert again == []
    assert all(pool.hits.get(f"/img/{n}") for n in pool.images)
    refetched = sum(pool.hits.values()) - sum(before.values())
    assert refetched == CANDIDATES - len(done)
    assert f"reused from the previous run: {len(done)}" in result.stdout
    assert f"(of which {len(done)} finished by an interrupted run)" in result.stdout
    assert f"{CANDIDATES} candidates -> {CANDIDATES} kept, 0 dropped (reconciled)" in result.stdout
    assert manifest.checkpoint_paths(str(tmp_path / "w"), "fetch") == []  # cleared
    stored = list((tmp_path / "w" / "fetch" / "images").rglob("*.jpg"))
    assert len(stored) == CANDIDATES


def test_a_work_dir_that_stops_taking_writes_midway_is_one_error_and_loses_nothing(pool, tmp_path):
    import resource

    pool.reset()
    first = sorted(pool.images)[:10]
    listing = tmp_path / "first.csv"
    listing.write_text(
        "url,label\n" + "".join(f"{pool.url('/img/' + n)},12_Landscape\n" for n in first)
    )
    result = camsdd("crawl", "--work", "w", "--source", "urls", "--urls", str(listing),
                    "--name", "pool", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert camsdd(*FETCH, cwd=tmp_path).returncode == 0
    before = manifest.latest_run(str(tmp_path / "w"), "fetch")
    shards = {path: Path(path).read_bytes() for path in before[1]}

    _crawl(pool, tmp_path)  # now all CANDIDATES
    running = subprocess.Popen([str(BIN / "camsdd"), *FETCH], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while _hits(pool) < CANDIDATES // 3:
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, "the fetch never got a third of the way"
        time.sleep(0.05)
    # From now on no file of the run may grow past 1 kB: the disk is "full" (this works
    # for root too, where a read-only chmod would not).
    resource.prlimit(running.pid, resource.RLIMIT_FSIZE, (1024, 1024))
    _, err = running.communicate(timeout=300)
    assert running.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: cannot write {tmp_path / 'w' / 'fetch'}"), err
    assert "File too large" in lines[0] and "previous manifest is unchanged" in lines[0]
    assert manifest.latest_run(str(tmp_path / "w"), "fetch") == before
    assert {path: Path(path).read_bytes() for path in before[1]} == shards

    result = camsdd(*FETCH, cwd=tmp_path)  # the disk has room again
    assert result.returncode == 0, result.stderr
    table = manifest.read_stage(str(tmp_path / "w"), "fetch")
    assert table.num_rows == CANDIDATES and set(table.column("status").to_pylist()) == {"kept"}


def _start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "camsdd"), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def _kill(running: subprocess.Popen, sent: signal.Signals) -> None:
    os.killpg(running.pid, sent)
    _, err = running.communicate(timeout=120)
    assert running.returncode == (-signal.SIGKILL if sent == signal.SIGKILL else 130), err


@pytest.fixture(scope="module")
def fetched(pool, tmp_path_factory) -> Path:
    """A work dir ``w`` (in the returned folder) holding the whole pool, fetched."""
    folder = tmp_path_factory.mktemp("fetched")
    _crawl(pool, folder)
    result = camsdd(*FETCH[:-1], "8", cwd=folder)  # --threads 8
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize("sent", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_embed_resumes_without_losing_duplicating_or_embedding_again(
    fetched, tmp_path, sent
):
    shutil.copytree(fetched / "w", tmp_path / "w")
    work = str(tmp_path / "w")
    stage = embedding_cache.checkpoint_stage(teacher.DEFAULT_TEACHER)
    running = _start("embed", "--work", "w", "--batch-size", "8", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while len(manifest.checkpoint_paths(work, stage)) < 3:  # 3 parts: at least 24 vectors
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, "the embed never checkpointed"
        time.sleep(0.05)
    _kill(running, sent)
    cached = embedding_cache.cached_paths(work, teacher.DEFAULT_TEACHER)
    assert embedding_cache.read_cache(cached).num_rows == 0  # nothing half written
    finished = manifest.read_table(manifest.checkpoint_paths(work, stage))
    done = dict(
        zip(
            finished.column("sha256").to_pylist(),
            finished.column("vector").to_pylist(),
            strict=True,
        )
    )
    assert 24 <= len(done) < CANDIDATES, "the run finished before it was killed"

    result = camsdd("embed", "--work", "w", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Only what the killed run had not finished was embedded; the rest came from it.
    assert f": {CANDIDATES - len(done)} embedded, {len(done)} already cached " in result.stdout
    assert f"({len(done)} computed by an interrupted run)" in result.stdout
    fetched_shas = manifest.read_stage(work, "fetch").column("sha256").to_pylist()
    table = embedding_cache.read_cache(embedding_cache.cached_paths(work, teacher.DEFAULT_TEACHER))
    shas = table.column("sha256").to_pylist()
    assert len(shas) == len(set(shas)) == CANDIDATES and set(shas) == set(fetched_shas)
    vectors = dict(zip(shas, table.column("vector").to_pylist(), strict=True))
    assert all(vectors[sha] == vector for sha, vector in done.items())  # moved as computed
    assert manifest.checkpoint_paths(work, stage) == []  # cleared
    assert not list((tmp_path / "w" / stage).glob("beam-temp-*"))  # the killed run's went
    again = camsdd("embed", "--work", "w", cwd=tmp_path)
    assert f": 0 embedded, {CANDIDATES} already cached, " in again.stdout, again.stderr


@pytest.fixture(scope="module")
def embedded_demo(tmp_path_factory) -> Path:
    """The demo pool (planted duplicates and leaks) crawled, fetched and embedded, in ``w``."""
    from pipeline.cli import demo

    folder = tmp_path_factory.mktemp("demo")
    assert demo.crawl_and_fetch(str(folder / "w")) == 0
    result = camsdd("embed", "--work", "w", "--reference", str(CAMSDD_ROOT), cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize("sent", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_dedup_leaves_the_previous_manifest_and_its_rerun_decides_the_same(
    embedded_demo, tmp_path, sent
):
    shutil.copytree(embedded_demo / "w", tmp_path / "w")
    work = str(tmp_path / "w")
    dedup = ["dedup", "--work", "w", "--reference", str(CAMSDD_ROOT)]
    result = camsdd(*dedup, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    before = manifest.latest_run(work, "dedup")
    shards = {path: Path(path).read_bytes() for path in before[1]}
    unkilled = dedup_decisions(work)
    assert {r["reason"] for r in unkilled} > {None}  # duplicates and leaks were dropped

    running = _start(*dedup, cwd=tmp_path)
    deadline = time.monotonic() + 300
    # Beam opens the manifest's temporary folder as the pipeline starts, and renames
    # its files into place only once every row is decided: kill in between.
    while not list((tmp_path / "w" / "dedup").glob("beam-temp-*")):
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, "the dedup never started writing"
        time.sleep(0.02)
    time.sleep(1.0)
    _kill(running, sent)
    # (a new complete run here would mean the kill came too late to test anything)
    assert manifest.latest_run(work, "dedup") == before
    assert {path: Path(path).read_bytes() for path in before[1]} == shards

    result = camsdd(*dedup, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert dedup_decisions(work) == unkilled
    assert len(manifest.latest_run(work, "dedup")[1]) == len(
        list((tmp_path / "w" / "dedup").glob("manifest-*.parquet"))
    )  # the previous run's shards went, and nothing half-written stayed
    assert not list((tmp_path / "w" / "dedup").glob("beam-temp-*"))


def _keep_half_the_cache(work: Path) -> int:
    """The embed cache with half its vectors: the rest must be embedded again. Returns
    how many there were."""
    import pyarrow.parquet as pq

    paths = embedding_cache.cached_paths(str(work), teacher.DEFAULT_TEACHER)
    table = embedding_cache.read_cache(paths)
    for path in paths:
        os.remove(path)
    half = table.slice(0, table.num_rows // 2)
    name = "vectors-20000101T000000-000000-00000-of-00001.parquet"
    pq.write_table(half, Path(paths[0]).with_name(name))
    return table.num_rows


LIMITED = {  # stage → (its command, what runs first, the files that must stay as they were)
    "embed": (["embed", "--work", "w", "--reference", str(CAMSDD_ROOT)], [], "embed/*/*.parquet"),
    "dedup": (["dedup", "--work", "w", "--reference", str(CAMSDD_ROOT)], [], "dedup/*.parquet"),
    "pseudolabel": (
        ["pseudolabel", "--work", "w", "--labeled", str(CAMSDD_ROOT)],
        [["dedup", "--work", "w", "--reference", str(CAMSDD_ROOT)]],
        "pseudolabel/*.parquet",
    ),
}


@pytest.mark.parametrize("stage", sorted(LIMITED))
def test_a_full_disk_stops_embed_dedup_and_pseudolabel_with_one_error_and_loses_nothing(
    embedded_demo, tmp_path, stage
):
    import resource

    shutil.copytree(embedded_demo / "w", tmp_path / "w")
    command, before, kept = LIMITED[stage]
    for step in before:
        assert camsdd(*step, cwd=tmp_path).returncode == 0
    if stage == "embed":
        vectors = _keep_half_the_cache(tmp_path / "w")
    else:
        assert camsdd(*command, cwd=tmp_path).returncode == 0  # the previous manifest
    previous = {path: path.read_bytes() for path in (tmp_path / "w").glob(kept)}
    assert previous

    # No file of the run may grow past 1 kB: the disk is "full" (this works for root
    # too, where a read-only chmod would not). Reading and computing go on; the first
    # real write (a checkpoint part, Beam's manifest shard, a report) fails.
    limited = subprocess.run([str(BIN / "camsdd"), *command], cwd=tmp_path, text=True,
                             capture_output=True, timeout=600,
                             preexec_fn=lambda: resource.setrlimit(  # noqa: PLW1509
                                 resource.RLIMIT_FSIZE, (1024, 1024)))  # fmt: skip
    assert limited.returncode == 2, limited.stderr
    lines = [line for line in limited.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in limited.stderr, limited.stderr
    assert lines[0].startswith(f"error: cannot write {tmp_path / 'w' / stage}"), lines[0]
    assert "File too large" in lines[0] and "previous manifest is unchanged" in lines[0]
    assert {path: path.read_bytes() for path in (tmp_path / "w").glob(kept)} == previous

    result = camsdd(*command, cwd=tmp_path)  # the disk has room again
    assert result.returncode == 0, result.stderr
    if stage == "embed":
        table = embedding_cache.read_cache(
            embedding_cache.cached_paths(str(tmp_path / "w"), teacher.DEFAULT_TEACHER)
        )
        shas = table.column("sha256").to_pylist()
        assert len(shas) == len(set(shas)) == vectors  # each once, none lost

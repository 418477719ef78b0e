"""A fetch of a few hundred loopback candidates killed midway, and a work dir that breaks.

Killed with SIGKILL (nothing runs on the way out) or SIGINT (Ctrl-C), then run again:
every candidate ends with exactly one row, what the killed run finished is not
downloaded again, and the counts reconcile. A work dir that turns read-only midway
gives one clear error and leaves the previous manifest as it was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from pipeline.store import manifest
from tests.helpers import BIN, LARGE_WEBP, camsdd, encode
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

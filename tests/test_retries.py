"""Beam retries a failed bundle: each stage's outputs stay exactly once.

What the runners do with an exception raised in a DoFn (read in Beam 2.x's source):

- Dataflow (batch) retries a failed work item (a bundle) up to 4 times, on the same or
  another worker; outputs of a failed attempt are discarded, its side effects are not.
- ``BundleBasedDirectRunner`` (``apache_beam/runners/direct/executor.py``,
  ``TransformExecutor._MAX_RETRY_PER_BUNDLE = 4``) does the same locally: it runs the
  bundle again, and commits only the outputs of the attempt that succeeds.
- The ``FnApiRunner`` (what ``DirectRunner`` runs batch pipelines on, and the stages'
  default here) does not retry: the first exception fails the pipeline.

So the tests below run the real stages on the ``BundleBasedDirectRunner`` with a DoFn
that fails the first time it meets some bundles, after doing all its work (writes to
the work dir, outputs already emitted): what a worker lost at the end of a bundle
looks like. What a failed attempt wrote is harmless because every write is keyed by
content (the image store by sha256) or read back one row per key (checkpoint parts),
and manifests come only from committed outputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.demo_data import CAMSDD_ROOT
from pipeline.models import teacher
from pipeline.stages import checkpoint as checkpoint_stage
from pipeline.stages import dedup as dedup_stage
from pipeline.stages import embed as embed_stage
from pipeline.stages import fetch as fetch_stage
from pipeline.stages import fetch_record, options
from pipeline.store import embedding_cache, manifest
from tests.helpers import LARGE_WEBP, camsdd, dedup_decisions, encode
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.slow  # 10 to 40 s each

CANDIDATES = 30
RETRYING = ["--runner", "BundleBasedDirectRunner"]


class Injected(ConnectionResetError):
    """The transient failure injected into a DoFn."""


def fail_first_attempts(monkeypatch, dofn_class: type, times: int = 2) -> list[str]:
    """``dofn_class.process`` raises ``Injected`` after its first ``times`` distinct
    inputs are fully processed (outputs emitted); a retry of the same input succeeds.
    Returns the inputs that failed (repr), filled as the run goes."""
    original = dofn_class.process
    failed: list[str] = []

    def process(self, element, *args, **kwargs):  # side inputs, if any, come as arguments
        yield from original(self, element, *args, **kwargs)
        if len(failed) < times and repr(element) not in failed:
            failed.append(repr(element))
            raise Injected("injected: connection reset at the end of a bundle")

    monkeypatch.setattr(dofn_class, "process", process)
    return failed


@pytest.fixture(scope="module")
def server():
    from PIL import Image

    photo = Image.open(LARGE_WEBP).convert("RGB")
    images = {}
    for i in range(CANDIDATES):
        x, y = (i * 37) % 600, (i * 23) % 380
        crop = photo.crop((x, y, x + 900, y + 600)).resize((600, 400))
        images[f"c{i:03d}.jpg"] = (encode(crop, "JPEG", quality=85), "image/jpeg")
    with LoopbackServer(images) as running:
        yield running


@pytest.fixture(scope="module")
def crawled(server, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crawled")
    listing = folder / "list.csv"
    listing.write_text(
        "url,label\n" + "".join(f"{server.url('/img/' + n)},12_Landscape\n" for n in server.images)
    )
    result = camsdd("crawl", "--work", "w", "--source", "urls", "--urls", str(listing),
                    "--name", "pool", cwd=folder)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder


def _fetch(work: str, beam_args: list[str]) -> dict:
    settings = fetch_record.FetchSettings(work=work, allow_private_addresses=True, retries=0)
    return fetch_stage.run_fetch(settings, beam_args, threads=4)


@pytest.fixture(scope="module")
def fetched(crawled, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fetched")
    shutil.copytree(crawled / "w", folder / "w")
    assert _fetch(str(folder / "w"), [])["reconciled"]
    return folder


def test_the_local_default_runner_does_not_retry(crawled, tmp_path, monkeypatch):
    shutil.copytree(crawled / "w", tmp_path / "w")
    failed = fail_first_attempts(monkeypatch, fetch_stage.FetchBatchDoFn, times=1)
    with pytest.raises(Exception, match="injected") as raised:
        _fetch(str(tmp_path / "w"), ["--runner", options.LOCAL_RUNNER])
    assert any(isinstance(e, Injected) for e in _chain(raised.value)) and len(failed) == 1
    assert manifest.latest_run(str(tmp_path / "w"), "fetch") is None


def test_a_retried_fetch_bundle_writes_each_candidate_once(crawled, server, tmp_path, monkeypatch):
    shutil.copytree(crawled / "w", tmp_path / "w")
    server.reset()
    failed = fail_first_attempts(monkeypatch, fetch_stage.FetchBatchDoFn)
    report = _fetch(str(tmp_path / "w"), RETRYING)
    assert len(failed) == 2  # two bundles failed after downloading, and were retried
    downloads = sum(v for k, v in server.hits.items() if k.startswith("/img/"))
    assert downloads > CANDIDATES  # the failed attempts' work was really done twice
    table = manifest.read_stage(str(tmp_path / "w"), "fetch")
    keys = table.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == CANDIDATES
    assert report["reconciled"] and report["kept"] == CANDIDATES
    assert manifest.checkpoint_paths(str(tmp_path / "w"), "fetch") == []


def test_a_retried_embed_bundle_caches_each_vector_once(fetched, tmp_path, monkeypatch):
    shutil.copytree(fetched / "w", tmp_path / "w")
    work = str(tmp_path / "w")
    failed = fail_first_attempts(monkeypatch, checkpoint_stage.CheckpointDoFn)
    summary = embed_stage.run_embed(work, beam_args=RETRYING, batch_size=8)
    assert len(failed) == 2 and summary["embedded"] == CANDIDATES
    table = embedding_cache.read_cache(embedding_cache.cached_paths(work, teacher.DEFAULT_TEACHER))
    shas = table.column("sha256").to_pylist()
    assert len(shas) == len(set(shas)) == CANDIDATES
    assert manifest.checkpoint_paths(work, embedding_cache.checkpoint_stage(summary["model"])) == []


def test_a_retried_dedup_bundle_decides_each_candidate_once(fetched, tmp_path, monkeypatch):
    shutil.copytree(fetched / "w", tmp_path / "w")
    work = str(tmp_path / "w")
    unretried = dedup_stage.run_dedup(work, str(CAMSDD_ROOT))
    expected = dedup_decisions(work)
    decide = fail_first_attempts(monkeypatch, dedup_stage.DecideClusterDoFn, times=1)
    match = fail_first_attempts(monkeypatch, dedup_stage.MatchReferenceDoFn, times=1)
    report = dedup_stage.run_dedup(work, str(CAMSDD_ROOT), beam_args=RETRYING)
    assert len(decide) == len(match) == 1 and report["reconciled"]
    assert dedup_decisions(work) == expected and len(expected) == CANDIDATES
    assert report["inputs"] == unretried["inputs"] == CANDIDATES
    # The reference index is built once per worker process, though the DoFn that built
    # it failed and was replaced (Beam discards a DoFn instance that raised).
    assert report["beam_counters"]["reference_index_builds"] == 1


def _chain(error: BaseException) -> list[BaseException]:
    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    return chain

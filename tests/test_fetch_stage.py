"""The fetch Beam pipeline end to end, on a real loopback server."""

from __future__ import annotations

import collections
import json

import pytest

from crawlers import lists
from pipeline.core import resizer
from pipeline.reports import fetch_report
from pipeline.stages import crawl
from pipeline.stages import fetch as fetch_stage
from pipeline.stages import fetch_record as fetch
from pipeline.store import manifest

#: path on the loopback server -> the reason fetch must give (None: kept).
EXPECTED = {
    "/img/photo.jpg": None,
    "/img/photo.png": None,
    "/img/photo.webp": None,
    "/img/cmyk.jpg": None,
    "/img/rotated.jpg": None,
    "/img/alpha.png": None,
    "/img/palette.gif": None,
    "/img/animated.gif": None,
    "/img/portrait.jpg": None,
    "/wrong-type/photo.jpg": None,
    "/redirect/photo.webp": None,
    "/img/tiny.jpg": "too_small",
    "/img/panorama.jpg": "extreme_aspect",
    "/img/blurred.jpg": "blurry",
    "/img/uniform.png": "near_uniform",
    "/img/grayscale.jpg": "grayscale",
    "/img/truncated.jpg": "corrupt",
    "/img/bomb.png": "too_large",
    "/img/tiff.tif": "unsupported_format",
    "/html": "not_an_image",
    "/status/404": "http_404",
    "/status/503": "http_503",
    "/truncated/photo.jpg": "truncated",
    "/oversize": "too_big",
    "/loop/a": "redirect_loop",
    "/noai/photo.jpg": "opted_out",
    "/slow/3": "timeout",
}


def _crawl_list(server, work) -> None:
    path = work / "list.csv"
    lines = ["url,label"] + [f"{server.url(p)},9_Mountain" for p in EXPECTED]
    lines.append("ftp://example.org/x.jpg,9_Mountain")  # dropped at crawl, never fetched
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    source = lists.UrlListSource(str(path))
    crawl.crawl(source, source.queries(), str(work), progress=False)


def _settings(work, **overrides) -> fetch.FetchSettings:
    values = {
        "work": str(work),
        "allow_private_addresses": True,
        "retries": 0,
        "read_timeout": 1.0,
        "max_bytes": 3 * 2**20,
        **overrides,
    }
    return fetch.FetchSettings(**values)


def _rows(work) -> dict[str, dict]:
    return {r["url"]: r for r in manifest.read_stage(str(work), "fetch").to_pylist()}


def test_every_candidate_ends_with_one_status_and_reasons_add_up(server, tmp_path):
    work = tmp_path / "w"
    _crawl_list(server, work)
    report = fetch_stage.run_fetch(_settings(work), threads=6)

    rows = _rows(work)
    assert len(rows) == len(EXPECTED)  # the crawl-dropped ftp:// row is not an input
    for path, reason in EXPECTED.items():
        row = rows[server.url(path)]
        assert row["reason"] == reason, (path, row["error"])
        assert row["status"] == ("kept" if reason is None else "dropped")
        assert row["query_class"] == "9_Mountain" and row["source"] == "urls"
    kept = [r for r in rows.values() if r["status"] == "kept"]
    for row in kept:
        # Relative to the work dir, so the work dir can move.
        assert row["image_path"] == f"fetch/images/{row['sha256'][:2]}/{row['sha256']}.jpg"
        with open(work / row["image_path"], "rb") as handle:
            data = handle.read()
        assert resizer.normalize(data).width == 576
        assert 0 <= row["phash"] < 2**64 and len(row["source_sha256"]) == 64
    # The same photo from three URLs: one file in the store.
    same = {rows[server.url(p)]["sha256"] for p in ("/img/photo.jpg", "/wrong-type/photo.jpg")}
    assert len(same) == 1

    reasons = collections.Counter(r["reason"] for r in rows.values() if r["reason"])
    assert report["reconciled"] and report["inputs"] == len(EXPECTED)
    assert report["kept"] == len(kept) == sum(r is None for r in EXPECTED.values())
    assert report["dropped_by_reason"] == dict(reasons)
    counters = report["beam_counters"]
    assert counters["kept"] == len(kept)
    assert {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("dropped:")} == (
        dict(reasons)
    )
    on_disk = json.loads((work / "fetch" / "report.json").read_text())
    assert on_disk["kept"] == len(kept)
    assert "| 9_Mountain |" in (work / "fetch" / "report.md").read_text()


def test_rerun_reuses_done_keys_and_retries_transient_failures(server, tmp_path):
    work = tmp_path / "w"
    _crawl_list(server, work)
    fetch_stage.run_fetch(_settings(work), threads=6)
    first = _rows(work)
    hits_before = dict(server.hits)

    report = fetch_stage.run_fetch(_settings(work), threads=6)
    second = _rows(work)
    assert second.keys() == first.keys()
    transient = [p for p, r in EXPECTED.items() if r in fetch.TRANSIENT_REASONS]
    assert sorted(transient) == ["/slow/3", "/status/503", "/truncated/photo.jpg"]
    assert report["fetched_this_run"] == len(transient)
    assert report["reused_from_previous_run"] == len(EXPECTED) - len(transient)
    for path in EXPECTED:
        grew = server.hits.get(path, 0) > hits_before.get(path, 0)
        assert grew == (path in transient), path
    # One manifest run on disk, one row per key.
    assert len(list((work / "fetch").glob("manifest-*.parquet"))) == 1

    # A kept image deleted from the store is fetched again.
    victim = first[server.url("/img/photo.png")]
    (work / "fetch" / "images" / victim["sha256"][:2] / f"{victim['sha256']}.jpg").unlink()
    fetch_stage.run_fetch(_settings(work), threads=6, retry_transient=False)
    assert server.hits["/img/photo.png"] == hits_before["/img/photo.png"] + 1
    assert _rows(work)[server.url("/img/photo.png")]["status"] == "kept"


def test_private_addresses_are_refused_without_the_flag(server, tmp_path):
    work = tmp_path / "w"
    _crawl_list(server, work)
    hits_before = sum(server.hits.values())
    report = fetch_stage.run_fetch(_settings(work, allow_private_addresses=False), threads=4)
    assert report["dropped_by_reason"] == {"private_address": len(EXPECTED)}
    assert sum(server.hits.values()) == hits_before


def test_no_crawl_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="camsdd crawl"):
        fetch_stage.run_fetch(_settings(tmp_path / "empty"))


def test_folder_candidates_are_read_from_disk(tmp_path, fixture_images):
    folder = tmp_path / "photos" / "4_Dog"
    folder.mkdir(parents=True)
    (folder / "a.webp").write_bytes(fixture_images["photo.webp"][0])
    (folder / "b.jpg").write_bytes(fixture_images["truncated.jpg"][0])
    work = tmp_path / "w"
    source = lists.FolderSource(str(tmp_path / "photos"))
    crawl.crawl(source, source.queries(), str(work), progress=False)
    report = fetch_stage.run_fetch(_settings(work, allow_private_addresses=False), threads=2)
    assert report["kept"] == 1 and report["dropped_by_reason"] == {"corrupt": 1}


def test_a_rerun_with_other_filters_decides_again_without_downloading(server, tmp_path):
    work = tmp_path / "w"
    _crawl_list(server, work)
    fetch_stage.run_fetch(_settings(work), threads=6)
    first = _rows(work)
    hits = dict(server.hits)
    kept = server.url("/img/photo.jpg")
    sharpness = first[kept]["sharpness"]

    strict = resizer.FilterConfig(min_sharpness=sharpness + 1)
    report = fetch_stage.run_fetch(
        _settings(work, filters=strict), threads=6, retry_transient=False
    )
    rows = _rows(work)
    assert rows[kept]["reason"] == "blurry"
    assert f"< {sharpness + 1}" in rows[kept]["error"]
    assert report["settings"]["filters"]["min_sharpness"] == sharpness + 1
    # A looser filter takes back a photo dropped as blurry: its image was stored.
    assert first[server.url("/img/blurred.jpg")]["reason"] == "blurry"
    loose = resizer.FilterConfig(min_sharpness=0)
    fetch_stage.run_fetch(_settings(work, filters=loose), threads=6, retry_transient=False)
    rows = _rows(work)
    assert rows[kept]["status"] == rows[server.url("/img/blurred.jpg")]["status"] == "kept"
    assert (work / rows[server.url("/img/blurred.jpg")]["image_path"]).is_file()
    assert server.hits == hits  # not one download more
    # A geometry filter loosened: that image was never stored, so it is fetched again.
    fetch_stage.run_fetch(
        _settings(work, filters=resizer.FilterConfig(min_sharpness=0, max_aspect=5)),
        threads=6,
        retry_transient=False,
    )
    assert _rows(work)[server.url("/img/panorama.jpg")]["status"] == "kept"
    assert server.hits["/img/panorama.jpg"] == hits["/img/panorama.jpg"] + 1


def test_an_edited_label_reaches_the_fetch_manifest_and_conflicts_are_counted(server, tmp_path):
    work = tmp_path / "w"
    urls = [server.url("/img/photo.jpg"), server.url("/img/cmyk.jpg")]
    one = work / "one.csv"
    one.parent.mkdir(parents=True)
    one.write_text(f"url,label\n{urls[0]},9_Mountain\n{urls[1]},9_Mountain\n")
    source = lists.UrlListSource(str(one))
    crawl.crawl(source, source.queries(), str(work), name="one", progress=False)
    fetch_stage.run_fetch(_settings(work), threads=2)
    one.write_text(f"url,label\n{urls[0]},12_Landscape\n{urls[1]},9_Mountain\n")
    source = lists.UrlListSource(str(one))
    crawl.crawl(source, source.queries(), str(work), name="one", progress=False)
    two = work / "two.csv"
    two.write_text(f"url,label\n{urls[1]},4_Dog\n")
    source = lists.UrlListSource(str(two))
    crawl.crawl(source, source.queries(), str(work), name="two", progress=False)
    hits = dict(server.hits)
    report = fetch_stage.run_fetch(_settings(work), threads=2)
    rows = _rows(work)
    assert rows[urls[0]]["query_class"] == "12_Landscape"  # the edit, with no download
    assert rows[urls[1]]["query_class"] == "4_Dog"  # the first label of the two, by name
    assert server.hits == hits
    assert report["beam_counters"]["label_conflicts"] == 1
    assert "1 candidates appear in several crawls with different labels" in (
        fetch_report.render_text(report)
    )


def test_top_errors_keep_their_numbers_and_a_truncation_says_how_much_arrived(server, tmp_path):
    work = tmp_path / "w"
    _crawl_list(server, work)
    report = fetch_stage.run_fetch(_settings(work), threads=6)
    messages = [message for message, _ in report["top_errors"]]
    assert any(m.startswith("http_404: 404") for m in messages), messages
    assert any(m.startswith("too_small: 120x80 gives a 120x80 3:2 crop") for m in messages)
    truncated = _rows(work)[server.url("/truncated/photo.jpg")]["error"]
    size = len(server.images["photo.jpg"][0])
    assert f"{size // 2:,} of {size:,} bytes, then the connection closed" in truncated

"""Crawlers against a local server answering in each API's documented JSON shape."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from crawlers import base, commons, flickr, lists, openverse
from crawlers.base import Query
from crawlers.http import ClientConfig, PoliteClient
from pipeline.stages import crawl
from tests.helpers import BIN, REPO
from tests.loopback import FlickrPhoto

DAY = 86_400
START = 1_500_000_000  # 2017-07-14


def _client(**overrides) -> PoliteClient:
    return PoliteClient(ClientConfig(**{"retries": 1, "backoff": 0.01, **overrides}))


def _manifest(work) -> list[dict]:
    rows = []
    for path in sorted((work / "crawl").glob("*/manifest-*.parquet")):
        rows += pq.read_table(io.BytesIO(path.read_bytes())).to_pylist()
    return rows


# ---------------------------------------------------------------- Flickr


def _flickr_photos(count: int) -> list[FlickrPhoto]:
    licenses = ["4", "5", "9", "1", "2", "10"]  # 1 and 2 are NonCommercial
    return [
        FlickrPhoto(
            id=str(1000 + i),
            title=f"Waterfall number {i}",
            license=licenses[i % len(licenses)],
            upload=START + i * 7 * DAY,
        )
        for i in range(count)
    ]


def _flickr(server, **options) -> flickr.FlickrSource:
    return flickr.FlickrSource(
        _client(),
        api_key=server.apis.flickr_key,
        min_date="2017-07-01",
        max_date="2019-01-01",
        endpoint=server.url("/flickr/services/rest/"),
        **options,
    )


def test_flickr_splits_date_windows_past_the_result_cap(server, tmp_path):
    server.apis.flickr_photos = _flickr_photos(60)
    server.apis.flickr_cap = 8  # Flickr's is 4,000; same logic
    source = _flickr(server, per_page=5, result_cap=8)
    summary = crawl.crawl(
        source, [Query("10_Waterfall", "waterfall")], str(tmp_path), progress=False
    )
    rows = _manifest(tmp_path)
    allowed = {p.id for p in server.apis.flickr_photos if p.license in flickr.DEFAULT_LICENSES}
    assert {r["source_id"] for r in rows} == allowed  # every reusable photo, none twice
    assert len(rows) == len(allowed) == 40 and summary.kept == 40
    windows = {(r.query["min_upload_date"], r.query["max_upload_date"]) for r in server.requests}
    assert len(windows) > 3  # it had to split
    sent = server.requests[0].query
    assert sent["per_page"] == "5" and "url_l" in sent["extras"] and "license" in sent["extras"]
    assert set(sent["license"].split(",")) == set(flickr.DEFAULT_LICENSES)
    row = rows[0]
    assert row["license"] in {"CC BY 2.0", "CC BY-SA 2.0", "CC0 1.0", "Public Domain Mark 1.0"}
    assert row["author"] == "Ada Photographer" and row["query_class"] == "10_Waterfall"
    assert row["page_url"].startswith("https://www.flickr.com/photos/12345@N00/")
    assert row["key"] == f"flickr-{row['key'].split('-')[1]}" and row["width"] == 1024


def test_flickr_license_choice_is_recorded(server, tmp_path):
    server.apis.flickr_photos = _flickr_photos(12)
    source = _flickr(server, licenses=("9",))
    crawl.crawl(source, [Query("10_Waterfall", "waterfall")], str(tmp_path), progress=False)
    assert {r["license"] for r in _manifest(tmp_path)} == {"CC0 1.0"}
    run = json.loads((tmp_path / "crawl" / "flickr" / "state" / "run.json").read_text())
    assert run["settings"]["licenses"] == ["9"]
    assert run["settings"]["license_names"] == ["CC0 1.0"]


def test_flickr_needs_a_key(monkeypatch):
    monkeypatch.delenv(flickr.API_KEY_ENV, raising=False)
    with pytest.raises(flickr.MissingApiKeyError, match="FLICKR_API_KEY"):
        flickr.FlickrSource(_client())


def test_api_key_never_appears_in_logs_manifests_or_errors(server, tmp_path, caplog):
    key = server.apis.flickr_key
    server.apis.flickr_photos = _flickr_photos(30)
    # Page 2 of the whole window fails twice (more than the one retry): the query stops.
    window_start = int(flickr._timestamp("2017-07-01", flickr.FIRST_UPLOAD))
    server.apis.flickr_fail_once = {(window_start, 2)}
    caplog.set_level(logging.DEBUG)
    source = flickr.FlickrSource(
        _client(retries=0),
        api_key=key,
        min_date="2017-07-01",
        max_date="2019-01-01",
        per_page=5,
        endpoint=server.url("/flickr/services/rest/"),
    )
    summary = crawl.crawl(
        source, [Query("10_Waterfall", "waterfall")], str(tmp_path), progress=False
    )
    assert summary.incomplete and "http_500" in summary.incomplete[0]
    assert any(r.query.get("api_key") == key for r in server.requests)  # it was sent
    written = "".join(p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file())
    assert key not in written
    assert key not in caplog.text and key not in summary.render_text()
    # A bad key's error message does not echo it either.
    bad = flickr.FlickrSource(
        _client(), api_key="wrong-key-987654321", endpoint=server.url("/flickr/services/rest/")
    )
    with pytest.raises(Exception) as caught:
        bad.fetch_page(Query("10_Waterfall", "waterfall"), None)
    assert "Invalid API Key" in str(caught.value) and "wrong-key-987654321" not in str(caught.value)


def test_interrupted_crawl_resumes_without_duplicates_or_lost_pages(server, tmp_path):
    server.apis.flickr_photos = _flickr_photos(30)
    window_start = int(flickr._timestamp("2017-07-01", flickr.FIRST_UPLOAD))
    server.apis.flickr_fail_once = {(window_start, 3)}
    query = Query("10_Waterfall", "waterfall")

    def source():
        return flickr.FlickrSource(
            _client(retries=0),
            api_key=server.apis.flickr_key,
            min_date="2017-07-01",
            max_date="2019-01-01",
            per_page=4,
            endpoint=server.url("/flickr/services/rest/"),
        )

    first = crawl.crawl(source(), [query], str(tmp_path), progress=False)
    assert first.incomplete and first.kept == 8  # pages 1 and 2 saved
    pages_before = len(server.requests)
    second = crawl.crawl(source(), [query], str(tmp_path), progress=False)
    assert not second.incomplete
    rows = _manifest(tmp_path)
    expected = {p.id for p in server.apis.flickr_photos if p.license in flickr.DEFAULT_LICENSES}
    assert sorted(r["source_id"] for r in rows) == sorted(expected)
    # Resumed at page 3: pages 1-2 were not requested again.
    resumed_pages = [int(r.query["page"]) for r in server.requests[pages_before:]]
    assert resumed_pages[0] == 3 and 1 not in resumed_pages
    third = crawl.crawl(source(), [query], str(tmp_path), progress=False)
    assert third.kept == second.kept and len(server.requests) == pages_before + len(
        resumed_pages
    )  # a finished crawl asks nothing more


# ---------------------------------------------------------------- Commons


def _commons_files() -> list[dict]:
    licenses = [
        ("CC BY-SA 4.0", "Jane <a href='//commons.wikimedia.org/wiki/User:J'>Doe</a>"),
        ("Public domain", "Unknown author"),
        ("CC0", "<span>Sam &amp; Co</span>"),
        ("CC BY-NC 2.0", "Nico"),  # NonCommercial: dropped
        ("Fair use", "Studio"),  # not reusable: dropped
        ("CC BY 3.0", "Bea"),
    ]
    return [
        {
            "pageid": 500 + i,
            "title": f"File:Sunset over the bay {i}.jpg",
            "license": licenses[i % 6][0],
            "artist": licenses[i % 6][1],
            "license_url": "https://creativecommons.org/licenses/by-sa/4.0",
            "width": 4000,
            "height": 3000,
        }
        for i in range(23)
    ]


def test_commons_search_paginates_and_filters_licenses(server, tmp_path):
    server.apis.commons_files = _commons_files()
    server.apis.commons_lag_once = True  # first answer: maxlag with Retry-After
    source = commons.CommonsSource(
        _client(), per_page=10, endpoint=server.url("/commons/w/api.php")
    )
    summary = crawl.crawl(
        source, [Query("15_Sunset_Sunrise", "sunset")], str(tmp_path), progress=False
    )
    rows = {r["source_id"]: r for r in _manifest(tmp_path)}
    assert len(rows) == 23  # three pages of 10, 10, 3 plus the lagged retry
    assert summary.dropped_by_reason == {"license_not_allowed": 8}
    first = server.requests[0].query
    assert first["maxlag"] == "5" and first["gsrsearch"] == "sunset filetype:bitmap"
    assert "extmetadata" in first["iiprop"]
    by_license = {r["license"]: r for r in rows.values()}
    assert by_license["CC BY-SA 4.0"]["author"] == "Jane Doe"
    assert by_license["CC0"]["author"] == "Sam & Co"
    assert "?thumb=" in by_license["CC BY-SA 4.0"]["url"]  # the 1024 px thumb, not 4000
    assert by_license["CC BY-SA 4.0"]["width"] == 1024
    assert by_license["CC BY-SA 4.0"]["page_url"].startswith("https://commons.wikimedia.org/")


def test_commons_category_generator(server, tmp_path):
    server.apis.commons_files = _commons_files()
    server.apis.commons_categories = {"Category:Sunsets": [500, 501, 502]}
    source = commons.CommonsSource(_client(), endpoint=server.url("/commons/w/api.php"))
    crawl.crawl(
        source, [Query("15_Sunset_Sunrise", "Category:Sunsets")], str(tmp_path), progress=False
    )
    assert sorted(r["source_id"] for r in _manifest(tmp_path)) == ["500", "501", "502"]
    assert server.requests[-1].query["generator"] == "categorymembers"


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("CC BY-SA 3.0", "cc-by-sa"),
        ("CC-BY-4.0", "cc-by"),
        ("cc-by-nc-sa-2.0", "cc-by-nc"),
        ("Public Domain", "pd"),
        ("PD-US", "pd"),
        ("CC0", "cc0"),
        ("GFDL", "gfdl"),
        ("CC BY-ND 4.0", "cc-by-nd"),
        ("Copyrighted free use", "other"),
        (None, "other"),
    ],
)
def test_commons_license_families(name, family):
    assert commons.license_family(name) == family


# ---------------------------------------------------------------- Openverse


def _openverse_results(count: int) -> list[dict]:
    return [
        {
            "id": f"00000000-0000-0000-0000-{i:012d}",
            "title": f"Neon sign {i}",
            "url": f"https://live.staticflickr.com/{i}.jpg",
            "foreign_landing_url": f"https://www.flickr.com/photos/x/{i}",
            "creator": f"creator {i}",
            "license": ["by", "cc0", "by-sa", "by-nc"][i % 4],
            "license_version": "2.0",
            "license_url": "https://creativecommons.org/licenses/by/2.0/",
            "width": 1024,
            "height": 768,
        }
        for i in range(45)
    ]


def test_openverse_pages_within_anonymous_limits_and_resumes_after_quota(server, tmp_path):
    server.apis.openverse_results = _openverse_results(45)
    endpoint = server.url("/openverse/v1/images/")
    query = Query("25_Neon_lights", "neon")
    first = crawl.crawl(
        openverse.OpenverseSource(_client(), max_requests=2, endpoint=endpoint),
        [query],
        str(tmp_path),
        progress=False,
    )
    assert first.incomplete and "quota_exhausted" in first.incomplete[0]
    assert len(server.requests) == 2
    second = crawl.crawl(
        openverse.OpenverseSource(_client(), max_requests=2, endpoint=endpoint),
        [query],
        str(tmp_path),
        progress=False,
    )
    assert not second.incomplete
    rows = _manifest(tmp_path)
    assert len(rows) == 45 and {r.query["page_size"] for r in server.requests} == {"20"}
    assert {r.query["license_type"] for r in server.requests} == {"commercial,modification"}
    assert sum(r["status"] == "dropped" for r in rows) == 11  # by-nc, should not pass
    assert all("Authorization" not in r.headers for r in server.requests)


def test_openverse_token_is_a_bearer_header(server, tmp_path, monkeypatch):
    server.apis.openverse_results = _openverse_results(45)
    server.apis.openverse_token = "ov-token-abcdef123456"
    monkeypatch.setenv(openverse.TOKEN_ENV, server.apis.openverse_token)
    source = openverse.OpenverseSource(
        _client(), page_size=50, endpoint=server.url("/openverse/v1/images/")
    )
    crawl.crawl(source, [Query("25_Neon_lights", "neon")], str(tmp_path), progress=False)
    assert len(server.requests) == 1 and len(_manifest(tmp_path)) == 45
    assert server.requests[0].headers["Authorization"] == "Bearer ov-token-abcdef123456"
    with pytest.raises(ValueError, match="without a token"):
        monkeypatch.delenv(openverse.TOKEN_ENV)
        openverse.OpenverseSource(_client(), page_size=50)


# ---------------------------------------------------------------- lists and folders


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".txt"])
def test_url_lists(tmp_path, suffix):
    rows = [
        {"url": "https://example.org/a.jpg", "label": "10_Waterfall", "license": "CC0"},
        {"url": "https://example.org/b.jpg", "label": "Waterfalls"},  # not a class
        {"url": "ftp://example.org/c.jpg", "label": "4_Dog"},
        {"url": "https://example.org/a.jpg", "label": "10_Waterfall"},  # repeated
        {"url": "", "label": "4_Dog"},
    ]
    path = tmp_path / f"list{suffix}"
    if suffix == ".csv":
        lines = ["url,label,license"] + [
            f"{r['url']},{r['label']},{r.get('license', '')}" for r in rows
        ]
        path.write_text("\n".join(lines) + "\n")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text("# my list\n" + "".join(r["url"] + "\n" for r in rows))
    source = lists.UrlListSource(str(path), default_class="9_Mountain")
    summary = crawl.crawl(source, source.queries(), str(tmp_path / "w"), progress=False)
    got = {r["url"]: r for r in _manifest(tmp_path / "w")}
    assert got["https://example.org/a.jpg"]["status"] == "kept"
    assert got["ftp://example.org/c.jpg"]["reason"] == "unsupported_scheme"
    assert summary.duplicates_merged == 1
    if suffix == ".txt":
        assert got["https://example.org/a.jpg"]["query_class"] == "9_Mountain"
        assert len(got) == 3
    else:
        assert got["https://example.org/a.jpg"]["query_class"] == "10_Waterfall"
        assert got["https://example.org/b.jpg"]["reason"] == "unknown_label"
        assert got[None]["reason"] == "no_image_url"
    if suffix == ".csv":
        assert got["https://example.org/a.jpg"]["license"] == "CC0"


def test_url_list_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("link,label\nhttps://x/a.jpg,4_Dog\n")
    with pytest.raises(ValueError, match="'url' column"):
        lists.read_url_rows(str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"url": "https://x/a.jpg"}\n{not json\n')
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        lists.read_url_rows(str(broken))


def test_folder_source(tmp_path, fixture_images):
    folder = tmp_path / "photos"
    (folder / "4_Dog").mkdir(parents=True)
    (folder / "Doggos").mkdir()
    (folder / "4_Dog" / "a.jpg").write_bytes(fixture_images["photo.jpg"][0])
    (folder / "Doggos" / "b.jpg").write_bytes(fixture_images["photo.jpg"][0])
    (folder / "loose.png").write_bytes(fixture_images["photo.png"][0])
    (folder / ".DS_Store").write_bytes(b"\0")
    source = lists.FolderSource(str(folder), default_class="5_Cat")
    crawl.crawl(source, source.queries(), str(tmp_path / "w"), progress=False)
    got = {r["source_id"]: r for r in _manifest(tmp_path / "w")}
    assert got["4_Dog/a.jpg"]["query_class"] == "4_Dog" and got["4_Dog/a.jpg"]["status"] == "kept"
    assert got["Doggos/b.jpg"]["reason"] == "unknown_label"
    assert got["loose.png"]["query_class"] == "5_Cat"
    assert got[".DS_Store"]["reason"] == "not_an_image_file"


# ---------------------------------------------------------------- queries and CLI


def test_default_queries_cover_all_30_classes():
    per_class = base.load_queries()
    assert len(per_class) == 30 and all(per_class.values())


def test_query_overrides_and_bad_classes():
    per_class = base.load_queries()
    chosen = base.select_queries(per_class, ["10_Waterfall"], ["10_Waterfall=cascade"])
    assert chosen == {"10_Waterfall": ["cascade"]}
    with pytest.raises(ValueError, match="9_Mountain"):
        base.select_queries(per_class, ["9_Mountains"])
    with pytest.raises(ValueError, match="CLASS=TEXT"):
        base.select_queries(per_class, None, ["waterfall"])


def test_crawl_command_without_key_fails_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != flickr.API_KEY_ENV}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "crawl",
            "--work",
            str(tmp_path),
            "--source",
            "flickr",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 2 and "FLICKR_API_KEY" in result.stderr


def test_crawl_command_against_fake_flickr(server, tmp_path):
    server.apis.flickr_photos = _flickr_photos(20)
    env = {**os.environ, flickr.API_KEY_ENV: server.apis.flickr_key}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "crawl",
            "--work",
            str(tmp_path),
            "--source",
            "flickr",
            "--class",
            "10_Waterfall",
            "--min-date",
            "2017-01-01",
            "--max-date",
            "2019-01-01",
            "--min-interval",
            "0",
            "--no-progress",
            "--endpoint",
            server.url("/flickr/services/rest/"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    allowed = [p for p in server.apis.flickr_photos if p.license in flickr.DEFAULT_LICENSES]
    assert f"10_Waterfall: {len(allowed)} kept" in result.stdout
    assert server.apis.flickr_key not in result.stdout + result.stderr
    texts = {r.query["text"] for r in server.requests}
    assert texts == set(base.load_queries()["10_Waterfall"])


def test_url_list_mistakes_name_the_file(tmp_path):
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("url,label\nhttps://x/caf\xe9.jpg,4_Dog\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.csv: not UTF-8 text \(byte 0xe9"):
        lists.UrlListSource(str(latin))
    for name, text in [("empty.csv", ""), ("header.csv", "url,label\n"), ("blank.txt", "\n# x\n")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=f"{name}: the url list is empty"):
            lists.UrlListSource(str(tmp_path / name))
    with pytest.raises(ValueError, match=r"--name '\.\./x'"):
        crawl.check_name("../x")


def test_an_edited_list_is_crawled_again_under_the_same_name(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("url,label\nhttps://example.org/a.jpg,4_Dog\n")
    source = lists.UrlListSource(str(listing))
    crawl.crawl(source, source.queries(), str(tmp_path / "w"), name="mine", progress=False)
    listing.write_text("url,label\nhttps://example.org/a.jpg,5_Cat\nhttps://example.org/b.jpg,\n")
    source = lists.UrlListSource(str(listing), default_class="4_Dog")
    crawl.crawl(source, source.queries(), str(tmp_path / "w"), name="mine", progress=False)
    got = {r["url"]: r["query_class"] for r in _manifest(tmp_path / "w")}
    assert got == {"https://example.org/a.jpg": "5_Cat", "https://example.org/b.jpg": "4_Dog"}


def test_a_url_with_two_labels_is_reported_with_a_count(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("url,label\nhttps://x.org/a.jpg,4_Dog\nhttps://x.org/a.jpg,5_Cat\n")
    source = lists.UrlListSource(str(one))
    summary = crawl.crawl(source, source.queries(), str(tmp_path / "w"), name="one", progress=False)
    assert summary.label_conflicts == ["https://x.org/a.jpg: 4_Dog, 5_Cat (in 'one')"]
    assert "WARNING 1 URLs have two different labels" in summary.render_text()
    other = tmp_path / "other.csv"
    other.write_text("url,label\nhttps://x.org/a.jpg,9_Mountain\nhttps://x.org/b.jpg,4_Dog\n")
    source = lists.UrlListSource(str(other))
    summary = crawl.crawl(source, source.queries(), str(tmp_path / "w"), name="two", progress=False)
    assert summary.label_conflicts == ["https://x.org/a.jpg: 9_Mountain, 4_Dog (in 'one')"]


def test_folder_links_that_leave_the_folder_or_loop_are_not_followed(tmp_path, fixture_images):
    folder = tmp_path / "photos"
    (folder / "4_Dog").mkdir(parents=True)
    (folder / "4_Dog" / "a.jpg").write_bytes(fixture_images["photo.jpg"][0])
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    (folder / "4_Dog" / "b.jpg").symlink_to(secret)  # looks like a photo, leaves the folder
    (folder / "4_Dog" / "c.jpg").symlink_to(folder / "4_Dog" / "a.jpg")  # inside: followed
    (folder / "4_Dog" / "loop").symlink_to(folder)
    (folder / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    source = lists.FolderSource(str(folder))
    crawl.crawl(source, source.queries(), str(tmp_path / "w"), progress=False)
    got = {r["source_id"]: r for r in _manifest(tmp_path / "w")}
    assert got["4_Dog/a.jpg"]["status"] == got["4_Dog/c.jpg"]["status"] == "kept"
    assert got["4_Dog/b.jpg"]["reason"] == "link_outside_folder"
    assert got["4_Dog/loop"]["reason"] == "link_loop"
    assert got["elsewhere"]["reason"] == "link_outside_folder"
    assert all(os.path.isabs(r["url"]) for r in got.values())  # resolved: any cwd works
    assert "hunter2" not in json.dumps(list(got.values()))


def test_a_folder_source_stores_absolute_paths(tmp_path, fixture_images, monkeypatch):
    (tmp_path / "photos" / "4_Dog").mkdir(parents=True)
    (tmp_path / "photos" / "4_Dog" / "a.jpg").write_bytes(fixture_images["photo.jpg"][0])
    monkeypatch.chdir(tmp_path)
    source = lists.FolderSource("photos")
    crawl.crawl(source, source.queries(), "w", progress=False)
    (row,) = _manifest(tmp_path / "w")
    assert row["url"] == str(tmp_path / "photos" / "4_Dog" / "a.jpg")


def test_an_answer_of_the_wrong_shape_stops_the_query_with_one_line(server, tmp_path):
    server.apis.flickr_photos = _flickr_photos(5)
    server.apis.flickr_wrong_shape = True
    env = {**os.environ, flickr.API_KEY_ENV: server.apis.flickr_key}
    result = subprocess.run(
        [str(BIN / "camsdd"), "crawl", "--work", str(tmp_path), "--source", "flickr",
         "--class", "10_Waterfall", "--min-interval", "0", "--no-progress",
         "--endpoint", server.url("/flickr/services/rest/")],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "INCOMPLETE (rerun to resume)" in result.stdout
    assert "bad_response: the answer has an unexpected shape" in result.stdout
    assert "2 queries stopped early" in result.stderr

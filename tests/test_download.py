"""The polite client and the downloader against a real server on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import pytest

from crawlers import download
from crawlers.http import ClientConfig, HostRateLimiter, HttpError, PoliteClient
from pipeline.core import resizer
from pipeline.stages import fetch_record as fetch


def _client(**overrides) -> PoliteClient:
    config = {"retries": 1, "backoff": 0.05, "read_timeout": 2.0, **overrides}
    return PoliteClient(ClientConfig(**config))


def _get(server, path: str, **overrides) -> download.Downloaded:
    return download.download(
        _client(**overrides), server.url(path), allow_private=True, max_bytes=2 * 2**20
    )


def _reason(server, path: str, **overrides) -> str:
    with pytest.raises(download.DownloadError) as caught:
        _get(server, path, **overrides)
    return caught.value.reason


def test_downloads_real_image_bytes(server, fixture_images):
    got = _get(server, "/img/photo.jpg")
    assert got.data == fixture_images["photo.jpg"][0]
    assert got.sniffed_format == "jpeg" and got.content_type == "image/jpeg"


def test_content_type_is_not_trusted(server, fixture_images):
    assert _get(server, "/wrong-type/photo.webp").sniffed_format == "webp"
    assert _get(server, "/no-type/photo.png").sniffed_format == "png"
    with pytest.raises(download.DownloadError, match="HTML") as caught:
        _get(server, "/html")
    assert caught.value.reason == "not_an_image"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/status/404", "http_404"),
        ("/status/403", "http_403"),
        ("/status/500", "http_500"),
        ("/truncated/photo.jpg", "truncated"),
        ("/oversize", "too_big"),
        ("/endless", "too_big"),
        ("/loop/a", "redirect_loop"),
        ("/noai/photo.jpg", "opted_out"),
    ],
)
def test_misbehaving_endpoints_have_a_reason(server, path, reason):
    assert _reason(server, path) == reason


def test_500_is_retried_before_giving_up(server):
    assert _reason(server, "/status/503", retries=2) == "http_503"
    assert server.hits["/status/503"] == 3


def test_timeout(server):
    started = time.monotonic()
    assert _reason(server, "/slow/3", read_timeout=0.3, retries=0) == "timeout"
    assert time.monotonic() - started < 2.5


def test_redirect_is_followed(server, fixture_images):
    got = _get(server, "/redirect/photo.png")
    assert got.final_url.endswith("/img/photo.png") and got.redirects == 1


def test_retry_after_is_honoured(server, fixture_images):
    started = time.monotonic()
    got = _get(server, "/flaky/429/photo.jpg")
    assert got.data == fixture_images["photo.jpg"][0]
    assert time.monotonic() - started >= 0.95  # Retry-After: 1
    assert server.hits["/flaky/429/photo.jpg"] == 2


def test_private_and_loopback_addresses_are_refused_by_default(server):
    client = _client()
    for url in (
        server.url("/img/photo.jpg"),
        "http://localhost/x.jpg",
        "http://10.1.2.3/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.jpg",
    ):
        with pytest.raises(download.DownloadError) as caught:
            download.download(client, url)
        assert caught.value.reason == "private_address", url
    assert "/img/photo.jpg" not in server.hits  # refused before connecting


def test_redirect_to_a_private_address_is_refused(server):
    # Only the first hop is allowed here: the redirect target is checked again.
    client = _client()
    download.check_url("http://93.184.215.14/x.jpg")  # a public address passes
    with pytest.raises(download.DownloadError) as caught:
        download.check_url(server.url("/img/photo.jpg"))
    assert caught.value.reason == "private_address"
    with pytest.raises(download.DownloadError) as caught:
        download.download(client, "file:///etc/passwd", allow_private=True)
    assert caught.value.reason == "unsupported_scheme"


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(round(seconds, 6))


def test_rate_limit_spaces_requests_per_host(server):
    clock = FakeClock()
    client = _client(min_interval=0.2)
    client.limiter = HostRateLimiter(0.2, clock=clock, sleep=clock.sleep)
    threads = [
        threading.Thread(target=client.get, args=(server.url("/img/tiny.jpg"),)) for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Five calls at the same instant: each waits for its own slot, 0.2 s apart.
    assert sorted(clock.slept) == [0.2, 0.4, 0.6, 0.8]
    assert len(server.requests) == 5


def test_limiter_is_per_host():
    clock = FakeClock()
    limiter = HostRateLimiter(0.5, {"slow.example": 2.0}, clock=clock, sleep=clock.sleep)
    assert limiter.wait("a.example") == 0.0
    assert limiter.wait("b.example") == 0.0  # another host: no wait
    assert limiter.wait("a.example") == 0.5
    clock.now += 10
    assert limiter.wait("a.example") == 0.0  # its slot has passed
    limiter.wait("slow.example")
    assert limiter.wait("slow.example") == 2.0  # a host's own interval
    assert clock.slept == [0.5, 2.0]


def test_user_agent_is_sent(server):
    _client(user_agent="camsdd-test/1.0 (me@example.org)").get(server.url("/img/tiny.jpg"))
    assert server.requests[-1].headers["User-Agent"] == "camsdd-test/1.0 (me@example.org)"


def test_connection_refused_is_a_clear_error():
    client = _client(retries=0)
    with pytest.raises(HttpError) as caught:
        client.get("http://127.0.0.1:9/nothing")
    assert caught.value.reason == "connection_error"


def test_fetch_candidate_never_raises(server, tmp_path):
    settings = fetch.FetchSettings(work=str(tmp_path), allow_private_addresses=True, retries=0)
    client = _client(retries=0)
    for path, reason in [
        ("/img/photo.jpg", None),
        ("/img/cmyk.jpg", None),
        ("/img/tiny.jpg", "too_small"),
        ("/img/bomb.png", "too_large"),
        ("/img/truncated.jpg", "corrupt"),
        ("/status/500", "http_500"),
        ("/html", "not_an_image"),
    ]:
        record = {"key": path, "url": server.url(path), "source": "urls", "query_class": None}
        row = fetch.fetch_candidate(record, client, settings)
        assert row["reason"] == reason, (path, row["error"])
        if reason is None:
            stored = tmp_path / "fetch" / "images" / row["sha256"][:2] / f"{row['sha256']}.jpg"
            assert stored.exists() and tmp_path / row["image_path"] == stored
            assert resizer.normalize(stored.read_bytes()).width == 576  # a real 576x384 JPEG

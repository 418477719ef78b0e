"""A real HTTP server on 127.0.0.1 for the crawl and fetch tests.

It serves fixture images and misbehaving endpoints, and answers in the JSON
shapes of Flickr's ``flickr.photos.search``, the MediaWiki Action API (Commons)
and Openverse's ``/v1/images/``. Every request is logged (path, query,
headers, time) so tests can check what the client really sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import math
import threading
import time
import urllib.parse
from typing import Any


@dataclasses.dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float


@dataclasses.dataclass
class FlickrPhoto:
    id: str
    title: str
    license: str
    upload: int  # unix time
    owner: str = "12345@N00"
    ownername: str = "Ada Photographer"


@dataclasses.dataclass
class FakeApis:
    """State of the fake APIs; tests fill and inspect it."""

    flickr_key: str = "flickr-test-key-0123456789"
    flickr_photos: list[FlickrPhoto] = dataclasses.field(default_factory=list)
    flickr_cap: int = 4000
    flickr_fail_once: set[tuple[int, int]] = dataclasses.field(default_factory=set)
    commons_files: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    commons_categories: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    commons_lag_once: bool = False
    openverse_results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    openverse_token: str | None = None
    #: Answer flickr.photos.search with JSON of a shape Flickr never documented.
    flickr_wrong_shape: bool = False


class LoopbackServer:
    """``with LoopbackServer(images) as server: server.url('/img/a.jpg')``."""

    def __init__(self, images: dict[str, tuple[bytes, str]] | None = None):
        self.images = dict(images or {})  # name -> (bytes, content type)
        self.apis = FakeApis()
        self.requests: list[Request] = []
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                with server._lock:
                    server.requests.append(
                        Request(parts.path, query, dict(self.headers), time.monotonic())
                    )
                    server.hits[parts.path] = server.hits.get(parts.path, 0) + 1
                    hit = server.hits[parts.path]
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server._route(self, parts.path, query, hit)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # Clients that hang up mid-body (size caps, timeouts) are expected here.
        self.httpd.handle_error = lambda request, client_address: None
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        """Forgets requests and fake-API state (one server serves many tests)."""
        with self._lock:
            self.requests.clear()
            self.hits.clear()
            self.apis = FakeApis()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # ------------------------------------------------------------ responses

    @staticmethod
    def _send(handler, status: int, body: bytes, content_type: str, **headers: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)

    def _json(self, handler, payload: Any, status: int = 200, **headers: str) -> None:
        self._send(handler, status, json.dumps(payload).encode(), "application/json", **headers)

    def _image(self, name: str) -> tuple[bytes, str]:
        return self.images[name]

    def _route(self, h, path: str, query: dict[str, str], hit: int) -> None:
        segments = path.strip("/").split("/")
        head, name = segments[0], "/".join(segments[1:])
        if head == "img" and name in self.images:
            body, kind = self._image(name)
            return self._send(h, 200, body, kind)
        if head == "wrong-type":
            return self._send(h, 200, self._image(name)[0], "text/html; charset=utf-8")
        if head == "no-type":
            return self._send(h, 200, self._image(name)[0], "application/octet-stream")
        if head == "html":
            page = b"<!DOCTYPE html><html><body>Not found, but 200</body></html>"
            return self._send(h, 200, page, "text/html")
        if head == "status":
            return self._send(h, int(name), b"error page", "text/plain")
        if head == "flaky":  # /flaky/<status>/<image>: fails once, then serves
            status, image = name.split("/", 1)
            if hit == 1:
                return self._send(h, int(status), b"busy", "text/plain", Retry_After="1")
            return self._send(h, 200, *self._image(image))
        if head == "slow":
            time.sleep(float(name))
            return self._send(h, 200, *self._image("photo.jpg"))
        if head == "truncated":
            body = self._image(name)[0]
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return None
        if head == "endless":  # no Content-Length, more bytes than any cap
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(self._image("photo.jpg")[0])
            chunk = b"\0" * 65536
            try:
                for _ in range(2000):
                    h.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            h.close_connection = True
            return None
        if head == "oversize":  # honest Content-Length over the cap
            body = self._image("photo.jpg")[0] + b"\0" * (3 * 2**20)
            return self._send(h, 200, body, "image/jpeg")
        if head == "redirect":
            h.send_response(302)
            h.send_header("Location", f"/img/{name}")
            h.send_header("Content-Length", "0")
            return h.end_headers()
        if head == "loop":
            target = "/loop/b" if name == "a" else "/loop/a"
            h.send_response(302)
            h.send_header("Location", target)
            h.send_header("Content-Length", "0")
            return h.end_headers()
        if head == "noai":
            return self._send(h, 200, *self._image(name), X_Robots_Tag="noindex, noai")
        if path == "/flickr/services/rest/":
            return self._flickr(h, query)
        if path == "/commons/w/api.php":
            return self._commons(h, query)
        if path == "/openverse/v1/images/":
            return self._openverse(h, query)
        return self._send(h, 404, b"not found", "text/plain")

    # ------------------------------------------------------------ fake APIs

    def _flickr(self, h, q: dict[str, str]) -> None:
        apis = self.apis
        if q.get("api_key") != apis.flickr_key:
            msg = "Invalid API Key (Key not found)"
            return self._json(h, {"stat": "fail", "code": 100, "message": msg})
        if apis.flickr_wrong_shape:
            return self._json(h, {"stat": "ok", "photos": ["not", "a", "page"]})
        page, per_page = int(q.get("page", 1)), int(q.get("per_page", 100))
        if (int(q["min_upload_date"]), page) in apis.flickr_fail_once:
            apis.flickr_fail_once.discard((int(q["min_upload_date"]), page))
            return self._send(h, 500, b"Internal error", "text/plain")
        licenses = set(q.get("license", "").split(",")) if q.get("license") else None
        text = q.get("text", "").lower()
        matched = [
            p
            for p in apis.flickr_photos
            if text in p.title.lower()
            and (licenses is None or p.license in licenses)
            and int(q["min_upload_date"]) <= p.upload <= int(q["max_upload_date"])
        ]
        total = len(matched)
        # Flickr serves only the first `cap` results; deeper pages repeat the last ones.
        served = matched[: apis.flickr_cap]
        start = min((page - 1) * per_page, max(len(served) - per_page, 0))
        photos = [
            {
                "id": p.id,
                "owner": p.owner,
                "secret": "abc",
                "server": "65535",
                "farm": 66,
                "title": p.title,
                "ispublic": 1,
                "license": p.license,
                "ownername": p.ownername,
                "url_l": self.url(f"/img/photo.jpg?flickr={p.id}"),
                "height_l": 683,
                "width_l": 1024,
            }
            for p in served[start : start + per_page]
        ]
        pages = math.ceil(total / per_page) if per_page else 0
        payload = {"page": page, "pages": pages, "perpage": per_page, "total": total}
        return self._json(h, {"photos": {**payload, "photo": photos}, "stat": "ok"})

    def _commons(self, h, q: dict[str, str]) -> None:
        apis = self.apis
        if apis.commons_lag_once:
            apis.commons_lag_once = False
            error = {"code": "maxlag", "info": "Waiting for a database server: 7 seconds lagged."}
            return self._json(h, {"error": error}, Retry_After="1")
        if q.get("generator") == "categorymembers":
            ids = apis.commons_categories.get(q["gcmtitle"], [])
            files = [f for f in apis.commons_files if f["pageid"] in ids]
            limit, offset_key, offset = (
                int(q["gcmlimit"]),
                "gcmcontinue",
                int(q.get("gcmcontinue", 0)),
            )
        else:
            words = q["gsrsearch"].replace("filetype:bitmap", "").strip().lower()
            files = [f for f in apis.commons_files if words in f["title"].lower()]
            limit, offset_key, offset = int(q["gsrlimit"]), "gsroffset", int(q.get("gsroffset", 0))
        chunk = files[offset : offset + limit]
        pages = []
        for index, f in enumerate(chunk, start=offset + 1):
            meta = {
                "LicenseShortName": {"value": f["license"], "source": "commons-desc-page"},
                "Artist": {"value": f["artist"], "source": "commons-desc-page"},
                "ObjectName": {"value": f["title"].removeprefix("File:"), "source": "x"},
            }
            if f.get("license_url"):
                meta["LicenseUrl"] = {"value": f["license_url"], "source": "x"}
            pages.append(
                {
                    "pageid": f["pageid"],
                    "ns": 6,
                    "title": f["title"],
                    "index": index,
                    "imagerepository": "local",
                    "imageinfo": [
                        {
                            "size": 123456,
                            "width": f["width"],
                            "height": f["height"],
                            "thumburl": self.url(f"/img/photo.jpg?thumb={f['pageid']}"),
                            "thumbwidth": 1024,
                            "thumbheight": round(1024 * f["height"] / f["width"]),
                            "url": self.url(f"/img/photo.jpg?orig={f['pageid']}"),
                            "descriptionurl": f"https://commons.wikimedia.org/wiki/{f['title']}",
                            "mime": f.get("mime", "image/jpeg"),
                            "extmetadata": meta,
                        }
                    ],
                }
            )
        payload: dict[str, Any] = {"batchcomplete": True, "query": {"pages": pages}}
        if offset + limit < len(files):
            payload["continue"] = {offset_key: str(offset + limit), "continue": "gsroffset||"}
        return self._json(h, payload)

    def _openverse(self, h, q: dict[str, str]) -> None:
        apis = self.apis
        authorized = apis.openverse_token and h.headers.get("Authorization") == (
            f"Bearer {apis.openverse_token}"
        )
        page_size, page = int(q.get("page_size", 20)), int(q.get("page", 1))
        if page_size > 20 and not authorized:
            detail = {"detail": "Authentication credentials were not provided."}
            return self._json(h, detail, status=401)
        if page > 20:
            detail = {"detail": "Invalid page: Searches are limited to 20 pages."}
            return self._json(h, detail, status=400)
        text = q.get("q", "").lower()
        matched = [r for r in apis.openverse_results if text in r["title"].lower()]
        chunk = matched[(page - 1) * page_size : page * page_size]
        page_count = math.ceil(len(matched) / page_size)
        return self._json(
            h,
            {
                "result_count": len(matched),
                "page_count": page_count,
                "page_size": page_size,
                "page": page,
                "results": chunk,
            },
        )

"""Wikimedia Commons (MediaWiki Action API): search or category generators.

* A query is searched among files (``generator=search``, ``filetype:bitmap``);
  a query that starts with ``Category:`` lists that category's files
  (``generator=categorymembers``).
* License and author come from ``extmetadata`` (``LicenseShortName``,
  ``LicenseUrl``, ``Artist``, HTML stripped); only reusable licenses are kept.
* Wikimedia's API etiquette: serial requests, a descriptive User-Agent with a
  contact (``--user-agent``), and ``maxlag``: when the servers are lagged the
  API answers a ``maxlag`` error with ``Retry-After``, and we wait and retry.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any

from crawlers.base import Page, Query, Source
from crawlers.http import HttpError, PoliteClient
from crawlers.records import Candidate

ENDPOINT = "https://commons.wikimedia.org/w/api.php"
#: License families kept by default: reuse and modification allowed, commercial too.
DEFAULT_LICENSES = ("pd", "cc0", "cc-by", "cc-by-sa")
ALL_LICENSE_FAMILIES = (*DEFAULT_LICENSES, "gfdl", "cc-by-nc", "cc-by-nd", "other")
THUMB_WIDTH = 1024  # >= 576 and a fraction of an original's bytes


def license_family(short_name: str | None) -> str:
    """Maps a Commons ``LicenseShortName`` (spelled many ways) to a family code.

    >>> license_family("CC BY-SA 4.0"), license_family("Public domain"), license_family("CC0")
    ('cc-by-sa', 'pd', 'cc0')
    """
    name = (short_name or "").strip().lower().replace("_", " ")
    compact = re.sub(r"[\s\-]+", "-", name)
    if not name:
        return "other"
    if compact.startswith("cc0") or "cc-zero" in compact:
        return "cc0"
    if name.startswith(("public domain", "pd")) or compact.startswith("pd-"):
        return "pd"
    if compact.startswith("cc-by"):
        if "-nc" in compact:
            return "cc-by-nc"
        if "-nd" in compact:
            return "cc-by-nd"
        return "cc-by-sa" if "-sa" in compact else "cc-by"
    if compact.startswith("gfdl"):
        return "gfdl"
    return "other"


def strip_html(value: str | None) -> str | None:
    if not value:
        return None
    text = html.unescape(re.sub(r"<[^>]+>", "", value))
    text = re.sub(r"\s+", " ", text).strip()
    return text or None


class CommonsSource(Source):
    name = "commons"

    def __init__(
        self,
        client: PoliteClient,
        *,
        licenses: tuple[str, ...] = DEFAULT_LICENSES,
        per_page: int = 50,
        maxlag: int = 5,
        max_lag_retries: int = 5,
        endpoint: str = ENDPOINT,
    ):
        unknown = [f for f in licenses if f not in ALL_LICENSE_FAMILIES]
        if unknown:
            raise ValueError(f"unknown license families {unknown}; known: {ALL_LICENSE_FAMILIES}")
        self.client = client
        self.licenses = tuple(licenses)
        self.per_page = per_page
        self.maxlag = maxlag
        self.max_lag_retries = max_lag_retries
        self.endpoint = endpoint

    def settings(self) -> dict[str, Any]:
        return {"licenses": list(self.licenses), "per_page": self.per_page}

    def _params(self, query: Query) -> dict[str, Any]:
        params: dict[str, Any] = {
            "action": "query",
            "format": "json",
            "formatversion": 2,
            "prop": "imageinfo",
            "iiprop": "url|size|mime|extmetadata",
            "iiurlwidth": THUMB_WIDTH,
            "iiextmetadatafilter": "LicenseShortName|LicenseUrl|Artist|ObjectName",
            "maxlag": self.maxlag,
        }
        text = query.text or ""
        if text.lower().startswith("category:"):
            params.update(
                generator="categorymembers", gcmtitle=text, gcmtype="file", gcmlimit=self.per_page
            )
        else:
            params.update(
                generator="search",
                gsrsearch=f"{text} filetype:bitmap",
                gsrnamespace=6,
                gsrlimit=self.per_page,
            )
        return params

    def fetch_page(self, query: Query, cursor: dict[str, Any] | None) -> Page:
        params = {**self._params(query), **(cursor or {})}
        for _attempt in range(self.max_lag_retries + 1):
            response = self.client.get(self.endpoint, params=params)
            if response.status_code >= 400:
                raise HttpError(
                    f"http_{response.status_code}",
                    f"Commons answered {response.status_code}: {response.text[:200]!r}",
                    status=response.status_code,
                )
            try:
                answer = response.json()
            except ValueError:
                raise HttpError(
                    "bad_response", f"Commons did not answer JSON: {response.text[:200]!r}"
                ) from None
            error = answer.get("error")
            if error and error.get("code") == "maxlag":
                wait = float(response.headers.get("Retry-After", self.maxlag))
                time.sleep(min(wait, self.client.config.max_retry_after))
                continue
            if error:
                raise HttpError("api_error", f"Commons error {error.get('code')}: {error}")
            break
        else:
            raise HttpError("too_many_retries", f"Commons stayed lagged over {self.maxlag} s")
        pages = (answer.get("query") or {}).get("pages") or []
        if isinstance(pages, dict):  # formatversion=1 shape
            pages = list(pages.values())
        pages = sorted(pages, key=lambda p: p.get("index", 0))
        found = [self._candidate(page, query) for page in pages]
        next_cursor = answer.get("continue")
        return Page(found, dict(next_cursor) if next_cursor else None)

    def _candidate(self, page: dict[str, Any], query: Query) -> Candidate:
        info = (page.get("imageinfo") or [{}])[0]
        meta = info.get("extmetadata") or {}

        def field(name: str) -> str | None:
            return (meta.get(name) or {}).get("value")

        width, height = info.get("width"), info.get("height")
        url = info.get("url")
        if info.get("thumburl") and width and width > THUMB_WIDTH:
            url, width, height = info["thumburl"], info.get("thumbwidth"), info.get("thumbheight")
        license_name = strip_html(field("LicenseShortName"))
        candidate = Candidate(
            source=self.name,
            source_id=str(page.get("pageid") or page.get("title")),
            url=url,
            query_class=query.query_class,
            query=query.text,
            page_url=info.get("descriptionurl"),
            license=license_name,
            license_url=field("LicenseUrl"),
            author=strip_html(field("Artist")),
            title=strip_html(field("ObjectName")) or page.get("title"),
            width=width,
            height=height,
        )
        if url is None:
            return candidate.drop("no_image_url")
        mime = info.get("mime") or ""
        if mime and not mime.startswith("image/"):
            return candidate.drop("not_an_image")
        if license_family(license_name) not in self.licenses:
            return candidate.drop("license_not_allowed")
        return candidate

"""Openverse ``/v1/images/``: openly licensed photos, within its small quotas.

Anonymous use is throttled (about 20 requests a minute and 200 a day), pages
hold at most 20 results and searches go at most 20 pages deep. This source
keeps to that by default: one request every 3 s, page size 20, page depth 20,
and a per-run request budget after which the crawl stops resumably (rerun
tomorrow to continue). ``OPENVERSE_TOKEN`` (an OAuth2 access token) raises the
limits; it is sent as a bearer header and masked in logs. Openverse's terms
forbid bulk scraping: use it for a few classes, not as the main source.
"""

from __future__ import annotations

import os
from typing import Any

from crawlers.base import Page, Query, Source
from crawlers.http import HttpError, PoliteClient, register_secret
from crawlers.records import Candidate

ENDPOINT = "https://api.openverse.org/v1/images/"
TOKEN_ENV = "OPENVERSE_TOKEN"
ANONYMOUS_PAGE_SIZE = 20
MAX_PAGE_DEPTH = 20
ANONYMOUS_INTERVAL = 3.0  # seconds between requests: 20 a minute
ANONYMOUS_DAILY_REQUESTS = 200
DEFAULT_LICENSE_TYPE = "commercial,modification"


def license_name(code: str | None, version: str | None) -> str | None:
    if not code:
        return None
    if code in ("cc0", "pdm"):
        return {"cc0": "CC0", "pdm": "Public Domain Mark"}[code] + (
            f" {version}" if version else ""
        )
    return f"CC {code.upper()}" + (f" {version}" if version else "")


class OpenverseSource(Source):
    name = "openverse"

    def __init__(
        self,
        client: PoliteClient,
        *,
        token: str | None = None,
        license_type: str = DEFAULT_LICENSE_TYPE,
        page_size: int | None = None,
        max_requests: int | None = None,
        endpoint: str = ENDPOINT,
    ):
        self.token = token or os.environ.get(TOKEN_ENV)
        register_secret(self.token)
        limit = ANONYMOUS_PAGE_SIZE if not self.token else 500
        self.page_size = page_size or ANONYMOUS_PAGE_SIZE
        if not 1 <= self.page_size <= limit:
            raise ValueError(
                f"Openverse page size must be 1..{limit}"
                + ("" if self.token else f" without a token ({TOKEN_ENV})")
            )
        self.max_requests = (
            max_requests
            if max_requests is not None
            else (None if self.token else ANONYMOUS_DAILY_REQUESTS)
        )
        self.requests_made = 0
        self.client = client
        self.license_type = license_type
        self.endpoint = endpoint

    def settings(self) -> dict[str, Any]:
        return {"license_type": self.license_type, "page_size": self.page_size}

    def fetch_page(self, query: Query, cursor: dict[str, Any] | None) -> Page:
        page = (cursor or {}).get("page", 1)
        if self.max_requests is not None and self.requests_made >= self.max_requests:
            raise HttpError(
                "quota_exhausted",
                f"stopped after {self.requests_made} Openverse requests (the anonymous "
                f"daily quota); rerun later to resume, or set {TOKEN_ENV}",
            )
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        params = {
            "q": query.text or "",
            "license_type": self.license_type,
            "category": "photograph",
            "page_size": self.page_size,
            "page": page,
        }
        self.requests_made += 1
        answer = self.client.get_json(self.endpoint, params=params, headers=headers)
        found = [self._candidate(item, query) for item in answer.get("results", [])]
        page_count = min(int(answer.get("page_count", 0)), MAX_PAGE_DEPTH)
        return Page(found, {"page": page + 1} if page < page_count else None)

    def _candidate(self, item: dict[str, Any], query: Query) -> Candidate:
        candidate = Candidate(
            source=self.name,
            source_id=str(item["id"]),
            url=item.get("url"),
            query_class=query.query_class,
            query=query.text,
            page_url=item.get("foreign_landing_url"),
            license=license_name(item.get("license"), item.get("license_version")),
            license_url=item.get("license_url"),
            author=item.get("creator"),
            title=item.get("title"),
            width=item.get("width"),
            height=item.get("height"),
        )
        if not candidate.url:
            return candidate.drop("no_image_url")
        code = item.get("license") or ""
        # The API filters by license_type; this second check keeps a bad page out.
        if ("commercial" in self.license_type and "nc" in code.split("-")) or (
            "modification" in self.license_type and "nd" in code.split("-")
        ):
            return candidate.drop("license_not_allowed")
        return candidate

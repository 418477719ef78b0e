"""Flickr ``flickr.photos.search``: photos per class query, reusable licenses only.

* The API key comes from ``FLICKR_API_KEY`` and is masked in every log and error.
* Flickr returns at most the first 4,000 results of a search, so a query
  whose total is over that cap is split into two upload-date windows, again
  and again, until each window fits (or is one day long).
* ``per_page=500`` with ``extras`` for the URL, size, license and owner: one
  request gives 500 candidate records. Flickr allows about 3,600 requests an
  hour per key; the default rate limit is one request per second.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from crawlers.base import Page, Query, Source
from crawlers.http import HttpError, PoliteClient, register_secret
from crawlers.records import Candidate
from pipeline.core.errors import UserError

ENDPOINT = "https://api.flickr.com/services/rest/"
API_KEY_ENV = "FLICKR_API_KEY"
RESULT_CAP = 4000
MAX_PER_PAGE = 500
FIRST_UPLOAD = dt.datetime(2004, 2, 10, tzinfo=dt.timezone.utc)  # Flickr's launch
SECONDS_PER_DAY = 86_400

#: flickr.photos.licenses.getInfo: id -> (name, url).
LICENSES: dict[str, tuple[str, str | None]] = {
    "0": ("All Rights Reserved", None),
    "1": ("CC BY-NC-SA 2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    "2": ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0/"),
    "3": ("CC BY-NC-ND 2.0", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    "4": ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    "5": ("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
    "6": ("CC BY-ND 2.0", "https://creativecommons.org/licenses/by-nd/2.0/"),
    "7": ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    "8": ("United States Government Work", "http://www.usa.gov/copyright.shtml"),
    "9": ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "10": ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/"),
    "11": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "12": ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    "13": ("CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0/"),
    "14": ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/"),
    "15": ("CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    "16": ("CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
}
#: Licenses that allow reuse and modification, commercial use included.
DEFAULT_LICENSES = ("4", "5", "7", "8", "9", "10", "11", "12")
#: Largest first-choice sizes that are still >= 576x384: "l" is 1024 on the long side.
URL_EXTRAS = ("url_l", "url_c", "url_o")


class MissingApiKeyError(UserError, RuntimeError):
    pass


def _timestamp(value: str | int | dt.datetime | None, default: dt.datetime) -> int:
    if value is None:
        return int(default.timestamp())
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        return int(value.timestamp())
    day = dt.date.fromisoformat(value)
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())


class FlickrSource(Source):
    name = "flickr"

    def __init__(
        self,
        client: PoliteClient,
        *,
        api_key: str | None = None,
        licenses: tuple[str, ...] = DEFAULT_LICENSES,
        min_date: str | None = None,
        max_date: str | None = None,
        per_page: int = MAX_PER_PAGE,
        result_cap: int = RESULT_CAP,
        endpoint: str = ENDPOINT,
    ):
        self.api_key = api_key or os.environ.get(API_KEY_ENV)
        if not self.api_key:
            raise MissingApiKeyError(
                f"Flickr needs an API key: set {API_KEY_ENV} (get one at "
                "https://www.flickr.com/services/apps/create/)."
            )
        register_secret(self.api_key)
        unknown = [code for code in licenses if code not in LICENSES]
        if unknown:
            raise ValueError(f"unknown Flickr license ids {unknown}; known: {sorted(LICENSES)}")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be 1..{MAX_PER_PAGE}, got {per_page}")
        self.client = client
        self.licenses = tuple(licenses)
        self.min_date, self.max_date = min_date, max_date
        self.per_page = per_page
        self.result_cap = result_cap
        self.endpoint = endpoint

    def settings(self) -> dict[str, Any]:
        # Only explicit dates: a default "until now" must not change the query id
        # (and so lose the resume state) from one day to the next.
        return {
            "licenses": list(self.licenses),
            "license_names": [LICENSES[c][0] for c in self.licenses],
            "min_date": self.min_date,
            "max_date": self.max_date,
            "per_page": self.per_page,
        }

    def _search(self, text: str, window: list[int], page: int) -> dict[str, Any]:
        params = {
            "method": "flickr.photos.search",
            "api_key": self.api_key,
            "text": text,
            "license": ",".join(self.licenses),
            "min_upload_date": window[0],
            "max_upload_date": window[1],
            "content_type": 1,  # photos only, no screenshots
            "media": "photos",
            "safe_search": 1,
            "sort": "relevance",
            "extras": ",".join(("license", "owner_name", "o_dims", *URL_EXTRAS)),
            "per_page": self.per_page,
            "page": page,
            "format": "json",
            "nojsoncallback": 1,
        }
        answer = self.client.get_json(self.endpoint, params=params)
        if answer.get("stat") != "ok":
            raise HttpError(
                "api_error",
                f"Flickr error {answer.get('code')}: {answer.get('message')}",
            )
        return answer["photos"]

    def fetch_page(self, query: Query, cursor: dict[str, Any] | None) -> Page:
        if cursor is None:
            now = dt.datetime.now(dt.timezone.utc)
            window = [_timestamp(self.min_date, FIRST_UPLOAD), _timestamp(self.max_date, now)]
            cursor = {"windows": [window], "page": 1}
        windows = [list(w) for w in cursor["windows"]]
        page = cursor["page"]
        window = windows[0]
        photos = self._search(query.text or "", window, page)
        total = int(photos.get("total", 0))
        if page == 1 and total > self.result_cap and window[1] - window[0] > SECONDS_PER_DAY:
            # Over the cap: only the first result_cap would ever be served. Halve
            # the window and start again on each half (this page is not kept;
            # it is fetched again within the first half).
            middle = (window[0] + window[1]) // 2
            windows[0:1] = [[window[0], middle], [middle + 1, window[1]]]
            return Page([], {"windows": windows, "page": 1})
        found = [self._candidate(photo, query) for photo in photos.get("photo", [])]
        served = page * self.per_page
        if page < int(photos.get("pages", 0)) and served < min(total, self.result_cap):
            return Page(found, {"windows": windows, "page": page + 1})
        rest = windows[1:]
        return Page(found, {"windows": rest, "page": 1} if rest else None)

    def _candidate(self, photo: dict[str, Any], query: Query) -> Candidate:
        license_id = str(photo.get("license", ""))
        name, url = LICENSES.get(license_id, (f"unknown license id {license_id}", None))
        image_url = width = height = None
        for extra in URL_EXTRAS:
            if photo.get(extra):
                size = extra.split("_", 1)[1]
                image_url = photo[extra]
                width, height = photo.get(f"width_{size}"), photo.get(f"height_{size}")
                break
        candidate = Candidate(
            source=self.name,
            source_id=str(photo["id"]),
            url=image_url,
            query_class=query.query_class,
            query=query.text,
            page_url=f"https://www.flickr.com/photos/{photo.get('owner')}/{photo['id']}",
            license=name,
            license_url=url,
            author=photo.get("ownername") or photo.get("owner"),
            title=photo.get("title") or None,
            width=int(width) if width else None,
            height=int(height) if height else None,
        )
        if license_id not in self.licenses:  # the API filters; this is a second check
            return candidate.drop("license_not_allowed")
        if image_url is None:
            return candidate.drop("no_image_url")
        return candidate

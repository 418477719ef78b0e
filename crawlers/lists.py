"""List sources: a URL-list file (txt, csv, jsonl) and a local (or ``gs://``) folder.

URL lists: a ``url`` column and an optional ``label`` (a CamSDD class folder
such as ``10_Waterfall``, which becomes the queried class), plus optional
``license``, ``license_url``, ``author``, ``title``, ``page_url``. A ``.txt``
file holds one URL per line (``#`` starts a comment); its class comes from
``--class``. Rows that cannot be used stay in the manifest as dropped with a
reason (``no_image_url``, ``unsupported_scheme``, ``unknown_label``).

Folders: class subfolders named like CamSDD's (``4_Dog/…``) give the label;
files at the top level get ``--class`` (or none). The record's url is the
file's path; fetch reads it with Beam's filesystems, never over HTTP.
"""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.parse
from typing import Any

from etils import epath

from crawlers.base import Page, Query, Source
from crawlers.records import Candidate
from pipeline import classes

PAGE_ROWS = 50_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
OPTIONAL_COLUMNS = ("license", "license_url", "author", "title", "page_url")


def read_url_rows(path: str) -> list[dict[str, Any]]:
    """Rows of a url-list file as dicts (``url`` plus whatever columns it has)."""
    text = epath.Path(path).read_text(encoding="utf-8-sig")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON object ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {row!r:.60}")
            rows.append(row)
        return rows
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "url" not in reader.fieldnames:
            raise ValueError(f"{path}: a CSV url list needs a header with a 'url' column")
        return [dict(row) for row in reader]
    if suffix in (".txt", ".lst", ""):
        return [
            {"url": line.strip()}
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    raise ValueError(f"{path}: url lists are .txt, .csv or .jsonl, not {suffix!r}")


def _check_label(candidate: Candidate) -> Candidate:
    if candidate.query_class and candidate.query_class not in classes.CLASS_FOLDERS:
        return candidate.drop("unknown_label")
    return candidate


class UrlListSource(Source):
    name = "urls"

    def __init__(self, path: str, *, default_class: str | None = None):
        if default_class and default_class not in classes.CLASS_FOLDERS:
            raise ValueError(
                f"--class {default_class!r}: {classes.describe_unknown_folder(default_class)}"
            )
        self.path = path
        self.default_class = default_class
        self._rows: list[dict[str, Any]] | None = None

    def settings(self) -> dict[str, Any]:
        return {"path": self.path, "default_class": self.default_class}

    def queries(self, per_class: Any = None) -> list[Query]:
        return [Query(self.default_class, None)]

    def fetch_page(self, query: Query, cursor: dict[str, Any] | None) -> Page:
        if self._rows is None:
            self._rows = read_url_rows(self.path)
        start = (cursor or {}).get("row", 0)
        rows = self._rows[start : start + PAGE_ROWS]
        found = [self._candidate(row, start + i) for i, row in enumerate(rows)]
        end = start + len(rows)
        return Page(found, {"row": end} if end < len(self._rows) else None)

    def _candidate(self, row: dict[str, Any], index: int) -> Candidate:
        url = str(row.get("url") or "").strip()
        label = str(row.get("label") or "").strip() or self.default_class
        candidate = Candidate(
            source=self.name,
            source_id=url or f"row:{index}",
            url=url or None,
            query_class=label,
            **{name: (str(row[name]) if row.get(name) else None) for name in OPTIONAL_COLUMNS},
        )
        if not url:
            return candidate.drop("no_image_url")
        if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            return candidate.drop("unsupported_scheme")
        return _check_label(candidate)


def _walk_files(folder: epath.Path) -> list[epath.Path]:
    # epath's rglob refuses '**' (one RPC per folder on GCS); walk by hand.
    found = []
    for path in folder.iterdir():
        found.extend(_walk_files(path) if path.is_dir() else [path])
    return found


class FolderSource(Source):
    name = "folder"

    def __init__(self, folder: str, *, default_class: str | None = None):
        root = epath.Path(folder)
        if not root.is_dir():
            raise ValueError(f"--folder {folder!r} is not a folder")
        if default_class and default_class not in classes.CLASS_FOLDERS:
            raise ValueError(
                f"--class {default_class!r}: {classes.describe_unknown_folder(default_class)}"
            )
        self.root = root
        self.default_class = default_class

    def settings(self) -> dict[str, Any]:
        return {"folder": os.fspath(self.root), "default_class": self.default_class}

    def queries(self, per_class: Any = None) -> list[Query]:
        return [Query(self.default_class, None)]

    def fetch_page(self, query: Query, cursor: dict[str, Any] | None) -> Page:
        files = sorted(_walk_files(self.root))
        found = []
        for path in files:
            relative = path.relative_to(self.root)
            parts = relative.parts
            label = parts[0] if len(parts) > 1 else self.default_class
            candidate = Candidate(
                source=self.name,
                source_id=relative.as_posix(),
                url=os.fspath(path),
                query_class=label,
                title=path.name,
            )
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                candidate.drop("not_an_image_file")
            else:
                _check_label(candidate)
            found.append(candidate)
        return Page(found, None)

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
import hashlib
import io
import json
import os
import urllib.parse
from typing import Any

from etils import epath

from crawlers.base import Page, Query, Source
from crawlers.records import Candidate
from pipeline.core import classes

PAGE_ROWS = 50_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
OPTIONAL_COLUMNS = ("license", "license_url", "author", "title", "page_url")


def read_url_rows(path: str) -> list[dict[str, Any]]:
    """Rows of a url-list file as dicts (``url`` plus whatever columns it has).

    Raises ValueError naming the file when it is not UTF-8 text or lists no URL.
    """
    rows = _parse_url_rows(path, _read_text(path))
    if not rows:
        raise ValueError(f"{path}: the url list is empty (no rows with a url)")
    return rows


def _read_text(path: str) -> str:
    data = epath.Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save the url list as UTF-8"
        ) from None


def content_digest(path: str) -> str:
    """What a url list holds, in 16 hex digits: an edited list gets new resume state."""
    return hashlib.sha256(epath.Path(path).read_bytes()).hexdigest()[:16]


def _parse_url_rows(path: str, text: str) -> list[dict[str, Any]]:
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
        if not text.strip():
            return []
        if not reader.fieldnames or "url" not in reader.fieldnames:
            raise ValueError(f"{path}: a CSV url list needs a header with a 'url' column")
        return [dict(row) for row in reader if any((v or "").strip() for v in row.values())]
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
        # Read now: an unreadable or empty list is an error before anything is written.
        self._rows = read_url_rows(path)
        self._digest = content_digest(path)

    def settings(self) -> dict[str, Any]:
        # The list's content is part of the query id: an edited list is crawled afresh
        # under the same --name instead of resuming the old list's cursor.
        return {
            "path": self.path,
            "default_class": self.default_class,
            "content": self._digest,
        }

    def queries(self, per_class: Any = None) -> list[Query]:
        return [Query(self.default_class, None)]

    def fetch_page(self, query: Query, cursor: dict[str, Any] | None) -> Page:
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


def _walk_local(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Files under a local folder, and (path, reason) of the links not followed.

    A symbolic link is followed only when it stays inside ``root``; a link to a folder
    is never followed (so no loop is walked forever). Nothing behind a refused link is
    read.
    """
    real_root = os.path.realpath(root)
    files, refused = [], []
    for directory, folders, names in os.walk(root, followlinks=False):
        for name in sorted(folders):
            path = os.path.join(directory, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                inside = target == real_root or target.startswith(real_root + os.sep)
                refused.append((path, "link_loop" if inside else "link_outside_folder"))
        for name in names:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if not target.startswith(real_root + os.sep):
                    refused.append((path, "link_outside_folder"))
                    continue
                if not os.path.isfile(target):
                    refused.append((path, "broken_link"))
                    continue
            files.append(path)
    return sorted(files), refused


class FolderSource(Source):
    name = "folder"

    def __init__(self, folder: str, *, default_class: str | None = None):
        # Stored resolved: fetch may run from another folder (or on other machines).
        if "://" not in folder:
            folder = os.path.abspath(os.path.expanduser(folder))
        root = epath.Path(folder)
        if not root.is_dir():
            raise ValueError(f"--folder {folder!r} is not a folder")
        if default_class and default_class not in classes.CLASS_FOLDERS:
            raise ValueError(
                f"--class {default_class!r}: {classes.describe_unknown_folder(default_class)}"
            )
        self.root = root
        self.default_class = default_class

    def _listing(self) -> tuple[list[epath.Path], list[tuple[str, str]]]:
        if "://" in os.fspath(self.root):
            return sorted(_walk_files(self.root)), []
        files, refused = _walk_local(os.fspath(self.root))
        return [epath.Path(f) for f in files], refused

    def settings(self) -> dict[str, Any]:
        # What the folder holds is part of the query id: added or removed files are
        # picked up by the next crawl with the same --name.
        files, refused = self._listing()
        listing = "\n".join(
            [f"{os.fspath(f.relative_to(self.root))}\t{f.stat().length}" for f in files]
            + [f"{path}\t{why}" for path, why in refused]
        )
        return {
            "folder": os.fspath(self.root),
            "default_class": self.default_class,
            "content": hashlib.sha256(listing.encode()).hexdigest()[:16],
        }

    def queries(self, per_class: Any = None) -> list[Query]:
        return [Query(self.default_class, None)]

    def fetch_page(self, query: Query, cursor: dict[str, Any] | None) -> Page:
        files, refused = self._listing()
        found = []
        for path in files:
            candidate = self._candidate(path)
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                candidate.drop("not_an_image_file")
            else:
                _check_label(candidate)
            found.append(candidate)
        for path, why in refused:  # recorded, never read
            found.append(self._candidate(epath.Path(path)).drop(why))
        return Page(found, None)

    def _candidate(self, path: epath.Path) -> Candidate:
        relative = path.relative_to(self.root)
        parts = relative.parts
        return Candidate(
            source=self.name,
            source_id=relative.as_posix(),
            url=os.fspath(path),
            query_class=parts[0] if len(parts) > 1 else self.default_class,
            title=path.name,
        )

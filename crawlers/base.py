"""The interface every source implements, and the per-class queries."""

from __future__ import annotations

import abc
import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from crawlers.records import Candidate
from pipeline.core import classes

try:  # Python 3.9+: importlib.resources.files
    from importlib.resources import files as _package_files
except ImportError:  # pragma: no cover
    from importlib_resources import files as _package_files


@dataclasses.dataclass(frozen=True)
class Query:
    """One search: the class it is for, and the text (or category) sent to the source.

    List sources (URL lists, folders) have a single query with ``text=None``.
    """

    query_class: str | None
    text: str | None

    def query_id(self, source: str, settings: Mapping[str, Any]) -> str:
        """Stable id of this query under these source settings (names its resume state)."""
        blob = json.dumps([source, self.query_class, self.text, settings], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Page:
    """One page of results, and the cursor that fetches the next (None: done)."""

    records: list[Candidate]
    next_cursor: dict[str, Any] | None


class Source(abc.ABC):
    """A place candidate images come from.

    A source pages through results with an opaque JSON-able cursor, so a crawl
    interrupted between pages resumes from the saved cursor.
    """

    #: Short name: also the prefix of candidate keys and of the manifest file.
    name: str = ""

    def settings(self) -> dict[str, Any]:
        """Settings that change the results (licenses, dates …); recorded, never secrets."""
        return {}

    def queries(self, per_class: Mapping[str, list[str]]) -> list[Query]:
        """The searches to run; API sources run the per-class queries."""
        return [Query(c, text) for c, texts in per_class.items() for text in texts]

    @abc.abstractmethod
    def fetch_page(self, query: Query, cursor: dict[str, Any] | None) -> Page:
        """Fetches the page at ``cursor`` (None: the first)."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        pass


def load_queries(path: str | None = None) -> dict[str, list[str]]:
    """Reads ``class,query`` rows (default: the editable ``crawlers/queries.csv``).

    Classes must be CamSDD class folder names; a class can have many rows.
    """
    if path is None:
        text = (_package_files("crawlers") / "queries.csv").read_text(encoding="utf-8")
        origin = "crawlers/queries.csv"
    else:
        from etils import epath

        text = epath.Path(path).read_text(encoding="utf-8")
        origin = path
    per_class: dict[str, list[str]] = {}
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"class", "query"} <= set(reader.fieldnames):
        raise ValueError(f"{origin}: needs a header with the columns class,query")
    for line, row in enumerate(reader, start=2):
        name, query = (row["class"] or "").strip(), (row["query"] or "").strip()
        if not name or name.startswith("#"):
            continue
        if name not in classes.CLASS_FOLDERS:
            raise ValueError(f"{origin}:{line}: {classes.describe_unknown_folder(name)}")
        if query:
            per_class.setdefault(name, []).append(query)
    return per_class


def select_queries(
    per_class: dict[str, list[str]],
    only_classes: Iterable[str] | None = None,
    overrides: Iterable[str] = (),
) -> dict[str, list[str]]:
    """Applies ``--class`` filters and ``--query CLASS=TEXT`` overrides.

    An override replaces that class's default queries for this run (several
    overrides of one class add up).
    """
    chosen = dict(per_class)
    replaced: dict[str, list[str]] = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not text:
            raise ValueError(f"--query {item!r}: expected CLASS=TEXT, e.g. 10_Waterfall=waterfall")
        if name not in classes.CLASS_FOLDERS:
            raise ValueError(f"--query {item!r}: {classes.describe_unknown_folder(name)}")
        replaced.setdefault(name, []).append(text)
    chosen.update(replaced)
    if only_classes:
        wanted = list(only_classes)
        for name in wanted:
            if name not in classes.CLASS_FOLDERS:
                raise ValueError(f"--class {name!r}: {classes.describe_unknown_folder(name)}")
        chosen = {name: chosen.get(name, []) for name in wanted}
    empty = [name for name, texts in chosen.items() if not texts]
    if empty:
        raise ValueError(f"no query for {', '.join(empty)}: add one with --query CLASS=TEXT")
    return {name: chosen[name] for name in classes.sort_class_folders(chosen)}

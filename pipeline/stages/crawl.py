"""The crawl runner: a source's queries page by page, resumably, into ``W/crawl/<name>/``.

Layout under the work directory (local or ``gs://``, through ``store.workdir``)::

  W/crawl/<name>/pages/<query_id>/page-00001.jsonl   one file per fetched page
  W/crawl/<name>/state/<query_id>.json               next cursor, pages, done
  W/crawl/<name>/manifest-<run>-00000-of-00001.parquet   all records, one row per key
  W/crawl/<name>/report.json                         counts per class and reason

A page file is written (atomically) before the cursor moves past it, and a
re-fetched page overwrites its own file: an interrupted crawl resumes with no
lost page and no duplicate record.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import logging
import re
import sys
import time
from typing import Any

import pyarrow.parquet as pq
from tqdm import tqdm

from crawlers import records
from crawlers.base import Query, Source
from crawlers.http import HttpError, redact
from pipeline.core import classes, schema
from pipeline.store import manifest as manifests
from pipeline.store import workdir

log = logging.getLogger(__name__)


STAGE = "crawl"


def crawl_dir(work: str, name: str) -> str:
    """``W/crawl/<name>``: one crawl's pages, state, manifest and report."""
    return workdir.join(work, STAGE, name)


def _write_json(path: str, value: Any) -> None:
    workdir.write_atomic(path, json.dumps(value, indent=1).encode())


def _read_json(path: str) -> Any:
    return json.loads(workdir.read_bytes(path))


@dataclasses.dataclass
class QueryState:
    query_class: str | None
    text: str | None
    cursor: dict[str, Any] | None = None
    pages: int = 0
    records: int = 0
    done: bool = False
    error: str | None = None


@dataclasses.dataclass
class CrawlSummary:
    name: str
    manifest: str
    total: int
    kept: int
    dropped_by_reason: dict[str, int]
    per_class: dict[str, int]
    incomplete: list[str]  # "class: text: error" of queries that stopped on an error
    duplicates_merged: int
    seconds: float
    #: Keys found with two different labels (in this crawl, or here and in another
    #: crawl of this work dir): "url: label, other label (where)"; the first label is kept.
    label_conflicts: list[str] = dataclasses.field(default_factory=list)

    def render_text(self) -> str:
        lines = [
            f"crawl '{self.name}': {self.total} records, {self.kept} kept "
            f"({self.duplicates_merged} repeats merged) in {self.seconds:.1f} s -> {self.manifest}"
        ]
        for reason, count in sorted(self.dropped_by_reason.items(), key=lambda kv: -kv[1]):
            lines.append(f"  dropped {reason}: {count}")
        for name, count in self.per_class.items():
            lines.append(f"  {name}: {count} kept")
        if self.label_conflicts:
            lines.append(
                f"  WARNING {len(self.label_conflicts)} URLs have two different labels (the "
                "first one is used), e.g.:"
            )
            lines += [f"    {item}" for item in self.label_conflicts[:5]]
        for item in self.incomplete:
            lines.append(f"  INCOMPLETE (rerun to resume) {item}")
        return "\n".join(lines)


def crawl(
    source: Source,
    queries: list[Query],
    work: str,
    *,
    name: str | None = None,
    max_per_query: int | None = None,
    progress: bool = True,
) -> CrawlSummary:
    """Runs every query to its end (or ``max_per_query`` records), then writes the manifest.

    A query whose page request fails for good (after the client's retries) is
    left resumable and reported as incomplete; the other queries still run.
    """
    started = time.monotonic()
    name = check_name(name or source.name)
    folder = crawl_dir(work, name)
    settings = source.settings()
    _write_json(
        workdir.join(folder, "state", "run.json"), {"source": source.name, "settings": settings}
    )
    query_ids = []
    # A bar on a terminal; in a log, the summary at the end says it all.
    bar = tqdm(
        total=len(queries),
        desc=f"crawl {name}",
        unit="query",
        disable=not progress or not sys.stderr.isatty(),
    )
    for query in queries:
        query_id = query.query_id(source.name, settings)
        query_ids.append(query_id)
        _run_query(source, query, query_id, folder, max_per_query)
        bar.update(1)
    bar.close()
    return _write_manifest(work, name, query_ids, started)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str) -> str:
    """A crawl name names files in ``W/crawl``: letters, digits, ``.``, ``_``, ``-`` only."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names files in "
            "W/crawl; no '/' or '..')"
        )
    return name


def _state_path(folder: str, query_id: str) -> str:
    return workdir.join(folder, "state", f"{query_id}.json")


def _run_query(
    source: Source, query: Query, query_id: str, folder: str, max_per_query: int | None
) -> QueryState:
    state_path = _state_path(folder, query_id)
    if workdir.exists(state_path):
        state = QueryState(**_read_json(state_path))
    else:
        state = QueryState(query.query_class, query.text)
    state.error = None
    pages_dir = workdir.join(folder, "pages", query_id)
    while not state.done:
        if max_per_query is not None and state.records >= max_per_query:
            break
        try:
            page = source.fetch_page(query, state.cursor)
        except HttpError as error:
            state.error = str(error)
            log.warning("query %s %r stopped: %s", query.query_class, query.text, error)
            break
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as error:
            # The source answered JSON of a shape it never documented: stop this query
            # resumably and say so, rather than die with a traceback.
            state.error = (
                f"bad_response: the answer has an unexpected shape "
                f"({type(error).__name__}: {str(error)[:120]})"
            )
            log.warning("query %s %r stopped: %s", query.query_class, query.text, state.error)
            break
        page_records = page.records
        if max_per_query is not None:
            page_records = page_records[: max(max_per_query - state.records, 0)]
        body = "".join(json.dumps(r.to_dict()) + "\n" for r in page_records)
        page_path = workdir.join(pages_dir, f"page-{state.pages + 1:05d}.jsonl")
        workdir.write_atomic(page_path, body.encode())
        state.pages += 1
        state.records += len(page_records)
        state.cursor = page.next_cursor
        state.done = page.next_cursor is None
        _write_json(state_path, dataclasses.asdict(state))
    _write_json(state_path, dataclasses.asdict(state))
    return state


def _write_manifest(work: str, name: str, query_ids: list[str], started: float) -> CrawlSummary:
    folder = crawl_dir(work, name)
    rows: dict[str, dict[str, Any]] = {}
    merged = 0
    incomplete = []
    conflicts = []
    for query_id in query_ids:
        state = _read_json(_state_path(folder, query_id))
        if state.get("error"):
            incomplete.append(f"{state['query_class']}: {state['text']!r}: {state['error']}")
        pattern = workdir.join(folder, "pages", query_id, "page-*.jsonl")
        for page_file in workdir.match(pattern):
            for line in workdir.read_bytes(page_file).decode().splitlines():
                record = json.loads(line)
                if record["key"] in rows:
                    merged += 1  # the same photo found by another query or page
                    first = rows[record["key"]]["query_class"]
                    if record["query_class"] != first:
                        conflicts.append(
                            f"{record['url']}: {first}, {record['query_class']} (in '{name}')"
                        )
                    continue
                rows[record["key"]] = record
    conflicts += _conflicts_with_other_crawls(work, name, rows)
    buffer = io.BytesIO()
    pq.write_table(records.to_table(list(rows.values())), buffer)
    # The naming scheme of every stage: a complete run under a new run id, then the
    # previous run's file goes.
    run_id = manifests.new_run_id()
    manifest = workdir.join(folder, f"manifest-{run_id}-00000-of-00001.parquet")
    workdir.write_atomic(manifest, buffer.getvalue())
    manifests.delete_other_runs(work, f"{STAGE}/{name}", run_id)

    kept = [r for r in rows.values() if r["status"] == schema.KEPT]
    dropped = collections.Counter(r["reason"] for r in rows.values() if r["status"] != schema.KEPT)
    per_class = collections.Counter(r["query_class"] or "(no class)" for r in kept)
    summary = CrawlSummary(
        name=name,
        manifest=manifest,
        total=len(rows),
        kept=len(kept),
        dropped_by_reason=dict(dropped),
        per_class={name: per_class[name] for name in classes.sort_class_folders(list(per_class))},
        incomplete=[redact(item) for item in incomplete],
        duplicates_merged=merged,
        seconds=time.monotonic() - started,
        label_conflicts=[redact(item) for item in conflicts],
    )
    _write_json(workdir.join(folder, "report.json"), dataclasses.asdict(summary))
    return summary


def _conflicts_with_other_crawls(
    work: str, name: str, rows: dict[str, dict[str, Any]]
) -> list[str]:
    """Keys this crawl labels differently from another crawl's manifest in the work dir."""
    found = []
    for other, paths in sorted(manifests.crawl_runs(work).items()):
        if other == name:
            continue
        try:
            table = manifests.read_table(paths).select(["key", "query_class"])
        except Exception:  # a damaged manifest is fetch's to report, with its name
            continue
        for key, label in zip(
            table.column("key").to_pylist(), table.column("query_class").to_pylist(), strict=True
        ):
            mine = rows.get(key)
            if mine is not None and mine["query_class"] != label:
                found.append(f"{mine['url']}: {mine['query_class']}, {label} (in '{other}')")
    return found

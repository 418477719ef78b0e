"""Fetch one candidate: download (or read), normalise, store; always one manifest row.

Pure of Beam: :func:`fetch_candidate` is what the Beam DoFn calls per record,
and what tests call directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from crawlers import download
from crawlers.http import ClientConfig, PoliteClient, redact
from pipeline.core import resizer, schema
from pipeline.core.errors import RecordError
from pipeline.core.schema import DROPPED, KEPT, PROVENANCE_COLUMNS
from pipeline.store import image_store, workdir

#: Drops worth another try on a rerun: the server, not the image, was the problem.
TRANSIENT_REASONS = frozenset(
    {"timeout", "connection_error", "too_many_retries", "truncated", "dns_error", "http_429"}
    | {f"http_{code}" for code in (500, 502, 503, 504)}
)

#: Columns of ``W/fetch/manifest-*.parquet``.
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("error", pa.string()),  # the human-readable detail of a drop
        *schema.provenance_fields(),
        ("final_url", pa.string()),
        ("content_type", pa.string()),
        ("bytes", pa.int64()),
        ("format", pa.string()),
        ("mode", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("content_width", pa.int64()),  # the photo inside any letterbox bars or fill
        ("content_height", pa.int64()),
        ("sha256", pa.string()),
        ("source_sha256", pa.string()),
        ("phash", pa.uint64()),
        ("phash_frame", pa.uint64()),
        ("image_path", pa.string()),
        ("colorfulness", pa.float64()),
        ("chroma", pa.float64()),
        ("contrast", pa.float64()),
        ("sharpness", pa.float64()),
        ("seconds", pa.float64()),
        ("fetched_at", pa.string()),
        ("run_id", pa.string()),
    ]
)


@dataclasses.dataclass(frozen=True)
class FetchSettings:
    """Everything a fetch worker needs; picklable, holds no secret."""

    work: str
    run_id: str = ""
    allow_private_addresses: bool = False
    max_bytes: int = download.MAX_BYTES
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    retries: int = 2
    max_retry_after: float = 30.0
    host_interval: float = 0.0
    user_agent: str = ""
    filters: resizer.FilterConfig = resizer.FilterConfig()

    def client_config(self) -> ClientConfig:
        config = ClientConfig(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries=self.retries,
            max_retry_after=self.max_retry_after,
            min_interval=self.host_interval,
        )
        if self.user_agent:
            config.user_agent = self.user_agent
        return config


def read_local(path: str, max_bytes: int) -> bytes:
    """Reads a folder-source file through Beam's filesystems, with the same size cap."""
    try:
        with FileSystems.open(path) as handle:
            data = handle.read(max_bytes + 1)
    except Exception as error:
        raise download.DownloadError("read_error", f"{path}: {error}") from None
    if len(data) > max_bytes:
        raise download.DownloadError("too_big", f"file over {max_bytes:,} bytes")
    if not data:
        raise download.DownloadError("empty_body", f"{path} is empty")
    return data


def base_row(record: dict[str, Any], run_id: str) -> dict[str, Any]:
    row = {name: None for name in SCHEMA.names}
    row["key"] = record["key"]
    for name in PROVENANCE_COLUMNS:
        row[name] = record.get(name)
    row["run_id"] = run_id
    row["fetched_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return row


def fetch_candidate(
    record: dict[str, Any], client: PoliteClient, settings: FetchSettings
) -> dict[str, Any]:
    """Fetches one crawl record; returns its manifest row (never raises for bad input)."""
    started = time.monotonic()
    row = base_row(record, settings.run_id)
    try:
        url = record.get("url")
        if not url:
            raise download.DownloadError("no_image_url", "the crawl record has no url")
        if record.get("source") == "folder":
            data = read_local(url, settings.max_bytes)
        else:
            got = download.download(
                client,
                url,
                max_bytes=settings.max_bytes,
                allow_private=settings.allow_private_addresses,
            )
            data = got.data
            row["final_url"], row["content_type"] = got.final_url, got.content_type
        row["bytes"] = len(data)
        _store(row, resizer.normalize(data, settings.filters, record.get("query_class")), settings)
        row["status"] = KEPT
    except RecordError as error:  # download, decode or filter: the record's reason
        row["status"], row["reason"] = DROPPED, error.reason
        row["error"] = redact(str(error))[:500]
        for name, value in getattr(error, "fields", {}).items():
            row[name] = value
        if getattr(error, "image", None) is not None:
            _store(row, error.image, settings)  # a looser filter on a rerun needs no download
    except workdir.WorkDirError:  # the work dir is full or unwritable: stop the run
        raise
    except Exception as error:  # a bug or an IO failure: recorded, the run goes on
        row["status"], row["reason"] = DROPPED, "internal_error"
        row["error"] = redact(f"{type(error).__name__}: {error}")[:500]
    row["seconds"] = round(time.monotonic() - started, 4)
    return row


def _store(row: dict[str, Any], image: resizer.NormalizedImage, settings: FetchSettings) -> None:
    row.update(
        format=image.format,
        mode=image.mode,
        width=image.width,
        height=image.height,
        content_width=image.content_width,
        content_height=image.content_height,
        sha256=image.sha256,
        source_sha256=image.source_sha256,
        phash=image.phash,
        phash_frame=image.phash_frame,
        **image.metrics,
    )
    row["image_path"] = image_store.store_image(settings.work, image.sha256, image.jpeg)


def reuse(
    previous: dict[str, Any],
    record: dict[str, Any],
    settings: FetchSettings,
    retry_transient: bool = True,
) -> dict[str, Any] | None:
    """The previous run's row for ``record`` under today's settings, or None: fetch it.

    Provenance comes from today's crawl record (an edited label is picked up). Filter
    decisions are taken again from the stored measurements, so changed thresholds
    apply without a download; an image that now passes but was dropped before it was
    stored (a geometry filter) is fetched again.
    """
    status, reason = previous.get("status"), previous.get("reason")
    row = {name: previous.get(name) for name in SCHEMA.names}
    row.update({name: record.get(name) for name in PROVENANCE_COLUMNS})
    if status == KEPT or reason in resizer.FILTER_REASONS:
        if previous.get("width") is None or previous.get("height") is None:
            return None
        metrics = None
        if previous.get("chroma") is not None:
            metrics = {name: previous[name] for name in resizer.METRIC_NAMES}
        verdict = resizer.decide_again(
            previous["width"],
            previous["height"],
            metrics,
            settings.filters,
            record.get("query_class"),
        )
        if verdict is None:
            if metrics is None or not image_store.is_stored(
                settings.work, previous.get("image_path")
            ):
                return None
            row.update(status=KEPT, reason=None, error=None)
            return row
        row.update(status=DROPPED, reason=verdict.reason, error=str(verdict)[:500])
        return row
    if status == DROPPED and not (retry_transient and reason in TRANSIENT_REASONS):
        return row
    return None

"""Candidate records: what a crawler finds (a URL and its provenance), no bytes."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pyarrow as pa

from pipeline.core import schema
from pipeline.core.schema import DROPPED, KEPT


def candidate_key(source: str, source_id: str) -> str:
    """A stable key: the same photo from the same source gets the same key on every run."""
    digest = hashlib.sha256(f"{source}\n{source_id}".encode()).hexdigest()
    return f"{source}-{digest[:16]}"


@dataclasses.dataclass
class Candidate:
    """One image a source offered for a class query.

    ``status`` is ``kept``, or ``dropped`` with a ``reason`` (e.g.
    ``license_not_allowed``, ``unknown_label``, ``unsupported_scheme``); dropped
    records stay in the manifest so every input is accounted for.
    """

    source: str
    source_id: str
    url: str | None
    query_class: str | None
    query: str | None = None
    page_url: str | None = None
    license: str | None = None
    license_url: str | None = None
    author: str | None = None
    title: str | None = None
    width: int | None = None  # as reported by the source, before download
    height: int | None = None
    status: str = KEPT
    reason: str | None = None
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = candidate_key(self.source, self.source_id)

    def drop(self, reason: str) -> Candidate:
        self.status, self.reason = DROPPED, reason
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Column order of ``W/crawl/manifest-*.parquet``.
SCHEMA = pa.schema(
    [
        *schema.status_fields(),
        *schema.provenance_fields(),
        ("width", pa.int64()),
        ("height", pa.int64()),
    ]
)


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{name: record.get(name) for name in SCHEMA.names} for record in records], schema=SCHEMA
    )

"""The record every stage adds to: its status, and the provenance it carries along.

One candidate is one record keyed by a stable ``key``. Every stage's manifest has
``key``, ``status`` (``kept`` or ``dropped``) and ``reason`` (None when kept; drop
reasons come from ``RecordError`` and the stages' own rules), and every manifest
after the crawl carries the crawl's provenance columns unchanged, so a license or
an author is never lost on the way to the TFDS example.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

KEPT, DROPPED = "kept", "dropped"
STATUSES = (KEPT, DROPPED)
#: The columns every manifest starts with.
STATUS_COLUMNS = ("key", "status", "reason")
#: Where a candidate came from, as the crawl found it; carried by every later manifest.
PROVENANCE_COLUMNS = (
    "url",
    "page_url",
    "source",
    "source_id",
    "query_class",
    "query",
    "license",
    "license_url",
    "author",
    "title",
)
#: The provenance the TFDS ``pseudo`` config keeps per example.
PROVENANCE_FEATURES = ("source", "url", "license", "author", "query_class")


def status_fields() -> list[pa.Field]:
    return [pa.field(name, pa.string()) for name in STATUS_COLUMNS]


def provenance_fields() -> list[pa.Field]:
    return [pa.field(name, pa.string()) for name in PROVENANCE_COLUMNS]


def query_class_of(row: Mapping[str, Any]) -> str:
    """The class a candidate was searched for, for grouping (``(no class)`` if none)."""
    return row.get("query_class") or "(no class)"


def outcome(row: Mapping[str, Any], family: Callable[[str], str] = str) -> str:
    """``kept`` or ``dropped:<reason>`` (``family`` groups reasons, e.g. duplicate_of:…)."""
    return KEPT if row["status"] == KEPT else f"{DROPPED}:{family(row['reason'])}"


@dataclasses.dataclass
class Tally:
    """How many rows were kept and dropped, per reason (and per group, if asked)."""

    kept: int
    dropped_by_reason: dict[str, int]
    per_group: dict[str, dict[str, int]]

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_reason.values())

    @property
    def rows(self) -> int:
        return self.kept + self.dropped

    def reconciles(self, inputs: int) -> bool:
        """Every input ends with exactly one status."""
        return inputs == self.rows


def tally(
    rows: Iterable[Mapping[str, Any]],
    group: Callable[[Mapping[str, Any]], str] | None = None,
    family: Callable[[str], str] = str,
) -> Tally:
    """Counts statuses and drop reasons, most common first; ``group`` adds per-group counts."""
    kept, reasons = 0, collections.Counter()
    per_group: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        if row["status"] == KEPT:
            kept += 1
        else:
            reasons[family(row["reason"])] += 1
        if group is not None:
            per_group[group(row)][outcome(row, family)] += 1
    return Tally(kept, dict(reasons.most_common()), {k: dict(v) for k, v in per_group.items()})

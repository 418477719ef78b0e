"""``W/review/corrections.parquet``: what reviewers decided, keyed by the stable key.

One row per reviewed sample: ``key`` (a candidate's key, or an official image's TFDS
id), ``kind`` (``candidate`` or ``official``), ``action`` (``accept``, ``reject`` or
``relabel``), ``old_class`` and ``new_class`` (class folders; ``new_class`` only for a
relabel) and ``reviewed_at``. ``camsdd review export`` writes it; ``camsdd
pseudolabel`` and ``tfds build camsdd`` read it (see the README's review section).
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import classes
from pipeline.core.errors import UserError
from pipeline.store import parquet_io, workdir

PATH = ("review", "corrections.parquet")
ACCEPT, REJECT, RELABEL = "accept", "reject", "relabel"
ACTIONS = (ACCEPT, REJECT, RELABEL)
CANDIDATE, OFFICIAL = "candidate", "official"
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("kind", pa.string()),
        ("action", pa.string()),
        ("old_class", pa.string()),
        ("new_class", pa.string()),
        ("reviewed_at", pa.string()),
    ]
)


class CorrectionsError(UserError, ValueError):
    """A corrections file that cannot be applied; the message names the rows."""


def path(work: str) -> str:
    return workdir.join(work, *PATH)


def read(work: str) -> list[dict[str, Any]]:
    """The corrections of ``work`` ([] when nobody reviewed yet), checked.

    Raises CorrectionsError naming the file and the rows with an unknown action or
    class (all of them, not the first).
    """
    location = path(work)
    if not workdir.exists(location):
        return []
    try:
        rows = parquet_io.table_from_bytes(workdir.read_bytes(location)).to_pylist()
    except Exception as error:  # pyarrow raises several types for damaged files
        raise CorrectionsError(f"{location} is not a readable Parquet file ({error})") from None
    bad = [f"{r.get('key')}: {problem}" for r in rows for problem in _problems(r)]
    if bad:
        raise CorrectionsError(
            f"{location}: {len(bad)} corrections cannot be applied: "
            + "; ".join(bad[:10])
            + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        )
    return rows


def check_known(work: str, candidate_decisions: dict[str, Any], known: set[str]) -> None:
    """Raises CorrectionsError naming candidate keys this work dir never had.

    ``known``: every key dedup saw (kept or dropped). A key dedup dropped on a later run
    is not an error (the pseudolabel report names it); one it never saw is a typo or
    another work dir's file.
    """
    unknown = sorted(key for key in candidate_decisions if key not in known)
    if unknown:
        raise CorrectionsError(
            f"{path(work)}: {len(unknown)} corrections name candidates this work dir never "
            f"had: {', '.join(unknown[:10])}"
            + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        )


def _problems(row: dict[str, Any]) -> list[str]:
    problems = []
    if row.get("action") not in ACTIONS:
        problems.append(f"unknown action {row.get('action')!r} (one of {', '.join(ACTIONS)})")
    if row.get("action") == RELABEL and row.get("new_class") not in classes.CLASS_FOLDERS:
        problems.append(f"unknown class {row.get('new_class')!r}")
    return problems


def write(work: str, rows: list[dict[str, Any]]) -> str:
    """Replaces the corrections file (atomically); returns its path."""
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in SCHEMA.names} for row in sorted(rows, key=_key)],
        schema=SCHEMA,
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    location = path(work)
    workdir.write_atomic(location, buffer.getvalue())
    return location


def _key(row: dict[str, Any]) -> str:
    return row["key"]


def by_key(rows: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in rows if r["kind"] == kind}

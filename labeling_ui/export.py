"""``camsdd review export``: the reviewers' decisions → ``W/review/corrections.parquet``.

A sample tagged ``accept`` or ``reject``, or whose ``label`` was changed to another
class, is one row. Earlier rows for samples no longer in the dataset are kept, so a
decision is never lost (the next ``camsdd pseudolabel`` reports such keys by name).
"""

from __future__ import annotations

from typing import Any

import fiftyone as fo

from labeling_ui import records as rec
from labeling_ui.db import ReviewError
from pipeline.store import corrections


def decisions(dataset: fo.Dataset) -> list[dict[str, Any]]:
    """One correction row per reviewed sample of ``dataset``."""
    fields = ["key", "split", "tags", "label.label", "pipeline_label", "last_modified_at"]
    rows, conflicts = [], []
    for key, split, tags, label, pipeline_label, modified in zip(
        *dataset.values(fields), strict=True
    ):
        tags = set(tags or [])
        relabeled = label is not None and label != pipeline_label
        actions = [a for a in (rec.ACCEPT, rec.REJECT) if a in tags] + (
            [rec.RELABEL] if relabeled else []
        )
        if not actions:
            continue
        if rec.REJECT in actions and len(actions) > 1:
            conflicts.append(f"{key} ({' and '.join(actions)})")
            continue
        rows.append(
            {
                "key": key,
                "kind": corrections.OFFICIAL
                if split in rec.OFFICIAL_SPLITS
                else corrections.CANDIDATE,
                "action": rec.RELABEL if relabeled else actions[0],
                "old_class": pipeline_label,
                "new_class": label if relabeled else None,
                "reviewed_at": modified.isoformat(timespec="seconds") if modified else None,
            }
        )
    if conflicts:
        raise ReviewError(
            f"{len(conflicts)} samples say two things: {', '.join(conflicts[:10])}; "
            "untag `reject` or restore the label, then export again"
        )
    return rows


def export(work: str, dataset: fo.Dataset) -> tuple[str, list[dict[str, Any]]]:
    """Writes the corrections file; returns its path and its rows."""
    present = set(dataset.values("key"))
    earlier = [r for r in corrections.read(work) if r["key"] not in present]
    rows = decisions(dataset) + earlier
    return corrections.write(work, rows), rows

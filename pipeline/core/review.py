"""What a reviewer's decision does to a candidate's pseudolabel row (dicts in, dict out).

* ``reject``: dropped, reason ``rejected_in_review``, whatever the teacher said;
* ``relabel``: kept with the reviewer's class, confidence 1 and a one-hot soft label,
  ``label_source`` ``review``;
* ``accept``: kept with the teacher's label even below its threshold; ``review_note``
  says which rule it would have failed.

A row with no decision is returned unchanged (``label_source`` ``teacher``).
"""

from __future__ import annotations

from typing import Any

from pipeline.core import classes
from pipeline.core.schema import DROPPED, KEPT

REJECTED_IN_REVIEW = "rejected_in_review"
ACCEPT, REJECT, RELABEL = "accept", "reject", "relabel"
TEACHER, REVIEW = "teacher", "review"


def apply(row: dict[str, Any], decision: dict[str, Any] | None) -> dict[str, Any]:
    """``row`` with ``decision`` (a corrections row, or None) applied."""
    row = {**row, "label_source": TEACHER, "review_action": None, "review_note": None}
    if decision is None:
        return row
    action = decision["action"]
    row["review_action"] = action
    if action == REJECT:
        row.update(status=DROPPED, reason=REJECTED_IN_REVIEW)
    elif action == RELABEL:
        index = classes.class_index(decision["new_class"])
        soft = [0.0] * classes.NUM_CLASSES
        soft[index] = 1.0
        row.update(
            status=KEPT,
            reason=None,
            label=decision["new_class"],
            label_index=index,
            confidence=1.0,
            soft_label=soft,
            label_source=REVIEW,
            review_note=f"relabeled from {row.get('label')}",
        )
    elif action == ACCEPT:
        if row.get("label") is None:  # never scored (no embedding): nothing to keep
            row["review_note"] = f"accepted, but not scored ({row.get('reason')})"
        else:
            note = f"accepted in review (teacher: {row['reason']})" if row.get("reason") else None
            row.update(status=KEPT, reason=None, review_note=note)
    return row

"""The saved views a reviewer starts from (each also opens by URL: ``?view=<slug>``)."""

from __future__ import annotations

import fiftyone as fo
from fiftyone import ViewField as F

from labeling_ui import records as rec
from pipeline.core import classes
from pipeline.core.pseudolabel import LOW_CONFIDENCE

#: How far below its class threshold a dropped candidate may be to be worth a look.
NEAR_THRESHOLD = 0.15


def review_views(dataset: fo.Dataset) -> dict[str, fo.DatasetView]:
    """name -> view, in the order the command lists them."""
    views = {
        "pseudo-lowest-confidence": dataset.match_tags(rec.EXTRA).sort_by("pseudo.confidence"),
        "dropped-just-below-threshold": dataset.match_tags(LOW_CONFIDENCE)
        .match(F("margin") > -NEAR_THRESHOLD)
        .sort_by("margin", reverse=True),
        "likely-mislabeled-official": dataset.match(F("label_issue") == True).sort_by(  # noqa: E712
            "self_confidence"
        ),
        "near-duplicates": dataset.match_tags("near_duplicate").sort_by("cluster"),
        "leaks": dataset.match_tags("leak"),
    }
    for folder in classes.CLASS_FOLDERS:
        views[f"class-{folder}"] = dataset.match(F("label.label") == folder).sort_by("confidence")
    return views


def save(dataset: fo.Dataset) -> list[str]:
    """Saves every review view (replacing earlier versions); returns their URL slugs."""
    slugs = []
    for name, view in review_views(dataset).items():
        dataset.save_view(name, view, overwrite=True)
        slugs.append(slug(name))
    return slugs


def slug(name: str) -> str:
    """The App's URL name of a saved view (lower case; ``_`` and ``.`` become ``-``)."""
    return name.lower().replace("_", "-").replace(".", "-")

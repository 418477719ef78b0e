"""The review dataset in FiftyOne: built from the records, updated in place on re-runs.

The pipeline owns its fields and its tags (split, ``source:…``, the outcome); it never
touches a reviewer's tags, and it moves the reviewer's ``label`` field only while the
reviewer has not changed it. Updates go field by field (``set_values``), label fields
attribute by attribute, so label ids and label tags a reviewer added stay too.
Import this module only once ``ReviewDatabase`` runs (it imports FiftyOne).
"""

from __future__ import annotations

from typing import Any

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F

from labeling_ui import records as rec
from pipeline.core import classes

DATASET = "camsdd-review"
#: Plain fields the pipeline writes (and rewrites on every update), by type.
_TEXT = (
    "key", "split", "source", "outcome", "pipeline_label", "url", "page_url", "license",
    "author", "query_class", "cluster", "match_key", "match_kind",
)  # fmt: skip
_NUMBER = ("confidence", "self_confidence", "threshold", "margin", "match_distance")
FIELD_TYPES = {
    **{name: (fo.StringField, {}) for name in _TEXT},
    **{name: (fo.FloatField, {}) for name in _NUMBER},
    "label_issue": (fo.BooleanField, {}),
    "cluster_size": (fo.IntField, {}),
    "soft_label": (fo.ListField, {"subfield": fo.FloatField}),
    "head_labels": (fo.ListField, {"subfield": fo.StringField}),
    "pipeline_tags": (fo.ListField, {"subfield": fo.StringField}),
}
SCALARS = tuple(FIELD_TYPES)
#: Label fields the pipeline writes: field -> (record key of the label, of the confidence).
LABELS = {
    "ground_truth": ("ground_truth", None),
    "pseudo": ("pseudo", "confidence"),
    "oof": ("oof_label", "oof_confidence"),
    "query": ("query_class", None),
}


def _classification(record: dict[str, Any], label_key: str, confidence_key: str | None):
    if record.get(label_key) is None:
        return None
    confidence = record.get(confidence_key) if confidence_key else None
    return fo.Classification(label=record[label_key], confidence=confidence)


def _sample(record: dict[str, Any]) -> fo.Sample:
    record = {**record, "pipeline_tags": rec.pipeline_tags(record)}
    sample = fo.Sample(
        filepath=record["filepath"],
        tags=record["pipeline_tags"],
        metadata=fo.ImageMetadata(width=576, height=384, mime_type="image/jpeg"),
        label=fo.Classification(label=record["pipeline_label"]),
    )
    for name in SCALARS:
        if record.get(name) is not None:
            sample[name] = record[name]
    for field, (label_key, confidence_key) in LABELS.items():
        label = _classification(record, label_key, confidence_key)
        if label is not None:
            sample[field] = label
    return sample


def open_dataset() -> fo.Dataset:
    if fo.dataset_exists(DATASET):
        return fo.load_dataset(DATASET)
    dataset = fo.Dataset(DATASET)
    dataset.persistent = True
    dataset.default_classes = list(classes.CLASS_FOLDERS)
    # Declared up front: a field every record leaves empty still has its type.
    for name, (kind, options) in FIELD_TYPES.items():
        dataset.add_sample_field(name, kind, **options)
    for name in ("label", *LABELS):
        dataset.add_sample_field(
            name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification
        )
    dataset.create_index("key", unique=True)
    return dataset


def sync(dataset: fo.Dataset, records: list[dict[str, Any]]) -> dict[str, int]:
    """Adds new records, updates the others in place, removes those the pipeline dropped.

    Returns how many samples were added, updated and removed.
    """
    ids = dict(zip(*dataset.values(["key", "id"]), strict=True)) if len(dataset) else {}
    new = [r for r in records if r["key"] not in ids]
    old = {ids[r["key"]]: r for r in records if r["key"] in ids}
    gone = set(ids) - {r["key"] for r in records}
    if new:
        dataset.add_samples([_sample(r) for r in new], progress=False)
    if old:
        _update(dataset, old)
    if gone:
        dataset.delete_samples([ids[key] for key in gone])
    return {"added": len(new), "updated": len(old), "removed": len(gone)}


def _update(dataset: fo.Dataset, old: dict[str, dict[str, Any]]) -> None:
    view = dataset.select(list(old))
    current = dict(
        zip(
            view.values("id"),
            zip(
                view.values("tags"),
                view.values("pipeline_tags"),
                view.values("label.label"),
                view.values("pipeline_label"),
                strict=True,
            ),
            strict=True,
        )
    )
    tags, labels = {}, {}
    for sample_id, record in old.items():
        sample_tags, previous_pipeline, label, previous_label = current[sample_id]
        reviewer = [t for t in sample_tags or [] if t not in (previous_pipeline or [])]
        tags[sample_id] = sorted(set(reviewer) | set(rec.pipeline_tags(record)))
        # The reviewer's label follows the pipeline only while the reviewer left it alone.
        labels[sample_id] = record["pipeline_label"] if label == previous_label else label
    dataset.set_values("tags", tags, key_field="id")
    dataset.set_values("label.label", labels, key_field="id")
    values = {
        **{name: {i: r.get(name) for i, r in old.items()} for name in SCALARS},
        "pipeline_tags": {i: rec.pipeline_tags(r) for i, r in old.items()},
    }
    for name, per_sample in values.items():
        dataset.set_values(name, per_sample, key_field="id")
    for field, (label_key, confidence_key) in LABELS.items():
        with_label = {i: r for i, r in old.items() if r.get(label_key) is not None}
        if not with_label:
            continue
        missing = set(dataset.select(list(with_label)).match(F(field) == None).values("id"))  # noqa: E711
        if missing:
            dataset.set_values(
                field,
                {i: _classification(with_label[i], label_key, confidence_key) for i in missing},
                key_field="id",
            )
        present = {i: r for i, r in with_label.items() if i not in missing}
        if present:
            dataset.set_values(
                f"{field}.label", {i: r[label_key] for i, r in present.items()}, key_field="id"
            )
            if confidence_key:
                dataset.set_values(
                    f"{field}.confidence",
                    {i: r.get(confidence_key) for i, r in present.items()},
                    key_field="id",
                )


def compute_brain(dataset: fo.Dataset, vectors: np.ndarray, min_cosine: float) -> None:
    """FiftyOne Brain fields from the cached teacher vectors (no model is downloaded).

    ``vectors`` are L2-normalized, in ``dataset``'s order; ``min_cosine`` is dedup's
    threshold, turned into the Brain's distance on unit vectors.
    """
    import fiftyone.brain as fob

    distance = float(np.sqrt(2 * (1 - min_cosine)))
    fob.compute_uniqueness(dataset, embeddings=vectors, progress=False)
    fob.compute_representativeness(dataset, embeddings=vectors, progress=False)
    duplicates = fob.compute_near_duplicates(
        dataset, threshold=distance, embeddings=vectors, progress=False
    )
    leaks = fob.compute_leaky_splits(
        dataset, splits="split", threshold=distance, embeddings=vectors, progress=False
    )
    found = {"near_duplicate": duplicates.duplicates_view(), "leak": leaks.leaks_view()}
    for tag, view in found.items():
        dataset.untag_samples(tag)
        view.tag_samples(tag)
        ids = set(view.values("id"))
        # A pipeline tag: replaced on the next update, never mixed up with a reviewer's.
        dataset.set_values(
            "pipeline_tags",
            {
                i: sorted(set(t or []) | ({tag} if i in ids else set()))
                for i, t in zip(*dataset.values(["id", "pipeline_tags"]), strict=True)
            },
            key_field="id",
        )
    official = dataset.exists("oof")
    if len(official):  # the teacher's held-out label against the official one
        fob.compute_mistakenness(official, "oof", label_field="ground_truth", progress=False)
    crawled = dataset.exists("pseudo").exists("query")
    if len(crawled):  # the teacher's label against the class the crawler searched for
        fob.compute_mistakenness(
            crawled,
            "pseudo",
            label_field="query",
            mistakenness_field="query_mistakenness",
            progress=False,
        )

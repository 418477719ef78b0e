"""The review dataset in FiftyOne: built from the records, updated in place on re-runs.

The pipeline owns its fields and its tags (split, ``source:…``, the outcome); it never
touches a reviewer's tags, and it moves the reviewer's ``label`` field only while the
reviewer has not changed it. Updates go field by field (``set_values``), label fields
attribute by attribute, so label ids and label tags a reviewer added stay too.
Import this module only once ``ReviewDatabase`` runs (it imports FiftyOne).
"""

from __future__ import annotations

import datetime
import random
from typing import Any

import fiftyone as fo
import numpy as np
from bson import ObjectId

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


def to_sample(record: dict[str, Any]) -> fo.Sample:
    """One record as a FiftyOne sample (metadata known from fetch: no file is read)."""
    fields = {name: record[name] for name in SCALARS if record.get(name) is not None}
    fields["pipeline_tags"] = rec.pipeline_tags(record)
    for field, (label_key, confidence_key) in LABELS.items():
        label = _classification(record, label_key, confidence_key)
        if label is not None:
            fields[field] = label
    # One constructor call: setting fields one by one validates the sample each time.
    return fo.Sample(
        filepath=record["filepath"],
        tags=fields["pipeline_tags"],
        metadata=fo.ImageMetadata(width=576, height=384, mime_type="image/jpeg"),
        label=fo.Classification(label=record["pipeline_label"]),
        **fields,
    )


def to_document(record: dict[str, Any], dataset_id: Any, now: datetime.datetime) -> dict:
    """One record as the MongoDB document ``add_samples(to_sample(record))`` stores.

    ``add_samples`` turns every inserted document back into Python objects, which costs
    most of its time (20,000 samples: about a minute here); inserting the documents
    themselves is what FiftyOne's own dataset importer does. The format is FiftyOne
    1.22's (pinned); ``tests/test_review.py`` checks it against ``to_sample``.
    """
    tags = rec.pipeline_tags(record)
    document = {
        "_id": ObjectId(),
        "filepath": record["filepath"],
        "tags": list(tags),
        "metadata": {"_cls": "ImageMetadata", "mime_type": "image/jpeg", "width": 576,
                     "height": 384},
        "_media_type": "image",
        "_rand": random.random(),
        "label": _label_document(record["pipeline_label"], None),
        **{name: record[name] for name in SCALARS if record.get(name) is not None},
        "pipeline_tags": list(tags),
        "_dataset_id": dataset_id,
        "created_at": now,
        "last_modified_at": now,
    }  # fmt: skip
    for field, (label_key, confidence_key) in LABELS.items():
        if record.get(label_key) is not None:
            confidence = record.get(confidence_key) if confidence_key else None
            document[field] = _label_document(record[label_key], confidence)
    return document


def _label_document(label: str, confidence: float | None) -> dict:
    document = {"_id": ObjectId(), "_cls": "Classification", "tags": []}
    if label is not None:  # FiftyOne leaves unset values out
        document["label"] = label
    if confidence is not None:
        document["confidence"] = confidence
    return document


def insert(dataset: fo.Dataset, records: list[dict[str, Any]]) -> None:
    """Inserts new samples, as documents (see ``to_document``)."""
    from fiftyone.core.odm import database

    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    documents = [to_document(r, dataset._doc.id, now) for r in records]
    # The dataset's own sample collection: where add_samples writes too.
    database.insert_documents(documents, dataset._sample_collection, ordered=False)
    dataset.reload()


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
        insert(dataset, new)
    if old:
        _update(dataset, old)
    if gone:
        dataset.delete_samples([ids[key] for key in gone])
    return {"added": len(new), "updated": len(old), "removed": len(gone)}


def _update(dataset: fo.Dataset, old: dict[str, dict[str, Any]]) -> None:
    """Writes only what changed: all current values in one read, one write per field that
    differs somewhere (a re-run after a small change touches few samples)."""
    label_paths = [f"{field}.{part}" for field in LABELS for part in ("label", "confidence")]
    paths = ["id", "tags", "label.label", *SCALARS, *label_paths]
    current = dict(zip(paths, dataset.select(list(old)).values(paths), strict=True))
    ids = current["id"]
    records = [old[i] for i in ids]
    wanted: dict[str, list[Any]] = {
        name: [rec.pipeline_tags(r) if name == "pipeline_tags" else r.get(name) for r in records]
        for name in SCALARS
    }
    # Reviewers' tags stay; the pipeline's own tags follow the new run.
    wanted["tags"] = [
        sorted({t for t in tags or [] if t not in (before or [])} | set(now))
        for tags, before, now in zip(
            current["tags"], current["pipeline_tags"], wanted["pipeline_tags"], strict=True
        )
    ]
    # The reviewer's label follows the pipeline only while the reviewer left it alone.
    wanted["label.label"] = [
        r["pipeline_label"] if label == before else label
        for r, label, before in zip(
            records, current["label.label"], current["pipeline_label"], strict=True
        )
    ]
    whole_labels: dict[str, dict[str, Any]] = {}
    for field, (label_key, confidence_key) in LABELS.items():
        labels, confidences = [], []
        for i, r, label in zip(ids, records, current[f"{field}.label"], strict=True):
            if r.get(label_key) is not None and label is None:  # no such label yet: add it
                whole_labels.setdefault(field, {})[i] = _classification(
                    r, label_key, confidence_key
                )
            labels.append(r.get(label_key) if r.get(label_key) is not None else label)
            confidences.append(r.get(confidence_key) if confidence_key else None)
        wanted[f"{field}.label"] = labels
        if confidence_key:
            wanted[f"{field}.confidence"] = confidences
    for name, values in wanted.items():
        changed = {
            i: new
            for i, new, now in zip(ids, values, current[name], strict=True)
            if new != now and i not in whole_labels.get(name.split(".")[0], {})
        }
        if changed:
            dataset.set_values(name, changed, key_field="id")
    for field, labels in whole_labels.items():
        dataset.set_values(field, labels, key_field="id")


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

"""What the review shows, read from what the stages wrote: one record per image.

Every official image (from ``W/reference``) and every dedup-kept candidate (from the
pseudolabel manifest, joined with dedup's cluster columns), with the fields and tags
the review dataset carries. Nothing is recomputed: no image is read, no model run.
Plain dicts and numpy, so it is tested without FiftyOne.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from labeling_ui.db import ReviewError
from pipeline.core import classes, pseudolabel, schema
from pipeline.store import embedding_cache, manifest, reference, workdir

#: The split tag of a candidate the pseudolabel rule kept, and of one it dropped.
EXTRA, CANDIDATE = "extra_pseudo", "candidate"
OFFICIAL_SPLITS = ("train", "validation", "test")
#: Reviewer actions: sample tags, and an edit of the ``label`` field.
ACCEPT, REJECT, RELABEL = "accept", "reject", "relabel"
PROVENANCE = ("url", "page_url", "license", "author", "source", "query_class")
DEDUP_COLUMNS = ("cluster", "cluster_size", "match_key", "match_kind", "match_distance")


def _read_optional(work: str, *path: str):
    location = workdir.join(work, *path)
    return workdir.read_bytes(location) if workdir.exists(location) else None


def load(work: str, labeled_root: str) -> tuple[list[dict[str, Any]], np.ndarray, str]:
    """(records, their teacher vectors in the same order, the teacher's model id)."""
    pseudo = manifest.read_stage(work, "pseudolabel")
    if pseudo is None:
        raise ReviewError(
            f"no pseudolabel run in {workdir.join(work, 'pseudolabel')}: run `camsdd pseudolabel "
            f"--work {work} --labeled {labeled_root}` first (the review shows its labels)"
        )
    ref_rows = reference.read(work)
    fresh, stale = reference.to_hash(ref_rows, reference.labeled_files(labeled_root))
    if stale or not fresh:
        raise ReviewError(
            f"{workdir.join(work, 'reference')} does not describe {labeled_root}: rerun "
            f"`camsdd pseudolabel --work {work} --labeled {labeled_root}`"
        )
    report = json.loads(_read_optional(work, "pseudolabel", "report.json") or b"{}")
    model_id = report.get("model")
    dedup = manifest.read_stage(work, "dedup")
    clusters = {r["key"]: r for r in dedup.to_pylist()} if dedup is not None else {}
    oof_bytes = _read_optional(work, "pseudolabel", "oof.parquet")
    oof = _oof_rows(oof_bytes) if oof_bytes else {}

    records = [_official(row, oof.get(row["key"])) for row in fresh if row["status"] == schema.KEPT]
    records += [_candidate(work, row, clusters.get(row["key"], {})) for row in pseudo.to_pylist()]
    vectors = _vectors(work, model_id, records)
    return records, vectors, model_id


def _oof_rows(data: bytes) -> dict[str, np.ndarray]:
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    return {
        key: np.asarray(probs, np.float32)
        for key, probs in zip(
            table.column("key").to_pylist(), table.column("oof").to_pylist(), strict=True
        )
    }


def _official(row: dict[str, Any], oof: np.ndarray | None) -> dict[str, Any]:
    label = row["class_folder"]
    record = {
        "key": row["key"],
        "filepath": row["path"],
        "sha256": row["sha256"],
        "split": row["split"],
        "outcome": row["split"],
        "source": "camsdd",
        "ground_truth": label,
        "pipeline_label": label,
        "confidence": 1.0,
        "license": "CC BY-NC-SA 4.0",
    }
    if oof is not None:  # an official training image: what the heads that never saw it say
        index = classes.class_index(label)
        record.update(
            oof_label=classes.CLASS_FOLDERS[int(oof.argmax())],
            oof_confidence=float(oof.max()),
            self_confidence=float(oof[index]),
            confidence=float(oof[index]),
            label_issue=bool(int(oof.argmax()) != index),
        )
    return record


def _candidate(work: str, row: dict[str, Any], dedup: dict[str, Any]) -> dict[str, Any]:
    kept = row["status"] == schema.KEPT
    record = {
        "key": row["key"],
        "filepath": workdir.resolve(work, row["image_path"]),
        "sha256": row["sha256"],
        "split": EXTRA if kept else CANDIDATE,
        "outcome": schema.KEPT if kept else row["reason"],
        "pipeline_label": row.get("label"),
        "confidence": row.get("confidence"),
        **{name: row.get(name) for name in PROVENANCE},
        **{name: dedup.get(name) for name in DEDUP_COLUMNS},
    }
    if row.get("label") is not None:  # scored (not dropped for want of an embedding)
        threshold = row.get("threshold")
        record.update(
            pseudo=row["label"],
            soft_label=[float(p) for p in row["soft_label"]],
            head_labels=[classes.CLASS_FOLDERS[i] for i in row["head_labels"]],
            threshold=threshold,
            margin=(row["confidence"] - threshold) if threshold is not None else None,
        )
    return record


def _vectors(work: str, model_id: str | None, records: list[dict[str, Any]]) -> np.ndarray:
    """The cached teacher vectors of ``records`` (L2-normalized), zeros where missing."""
    shas = [r["sha256"] for r in records]
    found = embedding_cache.vectors_for(work, model_id, shas) if model_id else {}
    dim = len(next(iter(found.values()))) if found else 1
    vectors = np.zeros((len(records), dim), np.float32)
    for i, record in enumerate(records):
        if record["sha256"] in found:
            vectors[i] = found[record["sha256"]]
    return pseudolabel.l2_normalize(vectors)


def pipeline_tags(record: dict[str, Any]) -> list[str]:
    """The tags the pipeline sets (and replaces on every update): split, source, outcome."""
    tags = [record["split"], f"source:{record['source']}"]
    if record["split"] in (EXTRA, CANDIDATE):
        tags.append(record["outcome"])
    return tags

"""``camsdd pseudolabel``: K-fold heads on the labeled set; keep confident, agreeing,
in-distribution candidates.

::

  CAMSDD_ROOT training/ ──sha256──► cached teacher embeddings ──► K stratified folds
        → K logistic-regression heads, OOF probabilities
        → cleanlab (confident joint on OOF) → noise-aware τ_c; class prototypes
  pre-pass: ≤ --pool-sample dedup-kept candidates' cached vectors → the K heads
        → "query strongly rejected" OOD proxies (+ shuffled-feature proxies)
        → OOD cut δ on the prototype z-score (Youden J, ≤ --max-id-loss held-out loss)
  W/dedup/manifest (kept) ⋈ W/embed/<model>/ cache  (CoGroupByKey on sha256, Beam)
        → BatchElements → open-set rule: OOD, agreement, few-shot prototypes, τ_c,
          query (ScoreDoFn) → ApplyReview (W/review/corrections.parquet)
        → GroupByKey(class) → at most --max-per-class, the most confident first
        → W/pseudolabel/manifest-<run>-*.parquet (one row per dedup-kept candidate)
        + report.{json,md}, confidence_histograms.png, reliability.png,
          precision_coverage.png, label_issues.csv, oof.parquet

The heads, cleanlab and the calibration run in process (a few MB of embeddings
even for the full CamSDD, plus a bounded pool sample); scoring, which grows with
the crawl, runs in Beam.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.core import (
    classes,
    open_set,
    pseudolabel,
    pseudolabel_eval,
    query_prior,
    review,
    schema,
)
from pipeline.core.schema import DROPPED, KEPT
from pipeline.models import teacher
from pipeline.reports import pseudolabel_report
from pipeline.stages import options as beam_options
from pipeline.stages import reference as reference_stage
from pipeline.stages import vectors as shared_vectors
from pipeline.store import corrections, embedding_cache, manifest, workdir

STAGE = "pseudolabel"
NAMESPACE = "camsdd.pseudolabel"
#: Columns carried over from the dedup manifest.
#: Carried over from the dedup manifest. The hashes go on to the build, which checks the
#: image's sha256 and then compares these pHashes instead of decoding it again.
CARRIED = [
    pa.field("key", pa.string()),
    *schema.provenance_fields(),
    pa.field("sha256", pa.string()),
    pa.field("phash", pa.uint64()),
    pa.field("phash_frame", pa.uint64()),
    pa.field("image_path", pa.string()),
    pa.field("width", pa.int64()),
    pa.field("height", pa.int64()),
]
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        *CARRIED[1:],
        ("label", pa.string()),  # the pseudo label: a class folder name
        ("label_index", pa.int64()),
        ("confidence", pa.float64()),  # the label's mean head probability (few-shot: prototypes)
        ("soft_label", pa.list_(pa.float32())),  # mean of the K heads, NUM_CLASSES values
        ("head_labels", pa.list_(pa.int64())),  # each head's class
        ("threshold", pa.float64()),  # τ of the label's class
        ("ood_score", pa.float64()),  # z to the label's prototype (reject above δ)
        ("few_shot", pa.bool_()),  # labeled by the few-shot prototype rule
        ("heads_agree", pa.bool_()),
        ("above_threshold", pa.bool_()),
        ("query_match", pa.bool_()),
        ("label_source", pa.string()),  # teacher, or review (a reviewer's relabel)
        ("review_action", pa.string()),  # accept, reject, relabel (None: not reviewed)
        ("review_note", pa.string()),
        ("dedup_run_id", pa.string()),
        ("run_id", pa.string()),
    ]
)


# ------------------------------------------------------------------ the labeled set


@dataclasses.dataclass
class LabeledSet:
    """The official training images the heads learn from.

    Attributes:
      keys: example ids (``train/<class folder>/<file>``).
      labels: (n,) class indices.
      vectors: (n, d) their cached teacher embeddings.
      skipped: (key, why) of training images left out (undecodable files).
    """

    keys: list[str]
    labels: np.ndarray
    vectors: np.ndarray
    skipped: list[tuple[str, str]]


def labeled_training(
    root: str,
    work: str,
    spec: teacher.TeacherSpec,
    beam_args: Sequence[str] = (),
    official_decisions: dict[str, dict[str, Any]] | None = None,
) -> LabeledSet:
    """Training images of CAMSDD_ROOT with their cached embeddings.

    Their sha256 comes from ``W/reference`` (read, not recomputed). A file that is no
    usable image is skipped (the build skips it too); one with no cached embedding is
    an error: the cache is stale, so ``camsdd embed --reference`` must run first.
    Reviewers' decisions on official images change what the heads learn from (a
    relabel is learnt, a reject is left out), never the official splits themselves.
    """
    official_decisions = official_decisions or {}
    rows = reference_stage.ensure_reference(work, root, beam_args)
    train = [r for r in rows if r["split"] == "train"]
    if not train:
        raise ValueError(f"{root} holds no training images to learn pseudo-labels from")
    usable = [r for r in train if r["status"] == schema.KEPT]
    found = embedding_cache.vectors_for(work, spec, [r["sha256"] for r in usable])
    keys, labels, vectors, missing = [], [], [], []
    for row in usable:
        decision = official_decisions.get(row["key"], {})
        if decision.get("action") == review.REJECT:
            continue
        if row["sha256"] in found:
            keys.append(row["key"])
            label = decision.get("new_class") or row["class_folder"]
            labels.append(classes.class_index(label))
            vectors.append(found[row["sha256"]])
        else:
            missing.append(row["key"])
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(train)} training images have no {spec.model_id} "
            f"embedding (e.g. {missing[0]}): run `camsdd embed --work {work} --reference "
            f"{root}` with the same --teacher first"
        )
    skipped = [(r["key"], r["reason"]) for r in train if r["status"] != schema.KEPT]
    return LabeledSet(keys, np.asarray(labels, np.int64), np.stack(vectors), skipped)


# ------------------------------------------------------------------ Beam


class ScoreDoFn(beam.DoFn):
    """Batches of dedup rows (with ``embedding``) → rows with the keep rule's verdict.

    The rule (the K heads, prototypes, thresholds: a few MB) is pickled with the DoFn;
    Beam unpickles a DoFn once per instance and reuses it for every bundle, so the
    heads load once per worker thread, never per element or bundle.
    """

    def __init__(self, rule: open_set.OpenSetRule, run_id: str):
        self._rule = rule
        self._run_id = run_id

    def _base(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {field.name: row.get(field.name) for field in CARRIED}
        out.update(dedup_run_id=row.get("run_id"), run_id=self._run_id)
        return out

    def process(self, batch):
        scored = [r for r in batch if r.get("embedding") is not None]
        for row in batch:
            if row.get("embedding") is None:
                Metrics.counter(NAMESPACE, f"dropped:{pseudolabel.NOT_EMBEDDED}").inc()
                yield {**self._base(row), "status": DROPPED, "reason": pseudolabel.NOT_EMBEDDED}
        if not scored:
            return
        x = np.stack([np.asarray(r["embedding"], np.float32) for r in scored])
        query = pseudolabel.class_indices([r.get("query_class") for r in scored])
        d = self._rule.score(x, query)
        tau, query_tau = open_set.split_tau(self._rule.model)
        threshold = query_prior.effective_tau(d.label, query, tau, query_tau)
        for i, row in enumerate(scored):
            label = int(d.label[i])
            score = float(d.ood_score[i])
            yield {
                **self._base(row),
                "status": KEPT if d.reason[i] is None else DROPPED,
                "reason": d.reason[i],
                "label": classes.CLASS_FOLDERS[label],
                "label_index": label,
                "confidence": round(float(d.confidence[i]), 6),
                "soft_label": [round(float(p), 6) for p in d.soft_label[i]],
                "head_labels": [int(v) for v in d.head_labels[i]],
                "threshold": float(threshold[i]) if np.isfinite(threshold[i]) else None,
                "ood_score": round(score, 4) if np.isfinite(score) else None,
                "few_shot": bool(d.few_shot[i]),
                "heads_agree": bool(d.agree[i]),
                "above_threshold": bool(d.confident[i]),
                "query_match": bool(d.query_ok[i]),
            }


def cap_class(element, cap: int):
    """One class's provisionally kept rows → the ``cap`` most confident stay kept."""
    _, rows = element
    rows = sorted(rows, key=lambda r: r["key"])  # deterministic tie-break
    confidence = np.array([r["confidence"] for r in rows])
    over = pseudolabel.cap_per_class(
        np.zeros(len(rows), np.int64), confidence, np.ones(len(rows), bool), cap
    )
    for row, is_over in zip(rows, over, strict=True):
        if is_over:
            row = {**row, "status": DROPPED, "reason": pseudolabel.OVER_CLASS_CAP}
        yield row


def _count(row: dict[str, Any]) -> dict[str, Any]:
    if row["status"] == KEPT:
        Metrics.counter(NAMESPACE, KEPT).inc()
    elif row["reason"] != pseudolabel.NOT_EMBEDDED:  # counted where it was decided
        Metrics.counter(NAMESPACE, f"dropped:{row['reason']}").inc()
    return row


def _count_input(row: dict[str, Any]) -> dict[str, Any]:
    Metrics.counter(NAMESPACE, "inputs").inc()
    return row


def build_pipeline(
    pipeline: beam.Pipeline,
    *,
    dedup_paths: list[str],
    vector_paths: list[str],
    rule: open_set.OpenSetRule,
    output_prefix: str,
    run_id: str,
    decisions: dict[str, dict[str, Any]] | None = None,
) -> None:
    """``rule``: the calibrated keep rule (shipped whole: K heads, prototypes, thresholds).

    ``decisions``: reviewers' corrections of candidates, by key (small: shipped whole).
    """
    config = rule.config
    decisions = decisions or {}
    candidates = (
        pipeline
        | "DedupManifests" >> beam.Create(dedup_paths)
        | "ReadDedup" >> beam.io.ReadAllFromParquet()
        | "DedupKept" >> beam.Filter(lambda r: r["status"] == KEPT)
        | "CountInputs" >> beam.Map(_count_input)
    )
    vectors = shared_vectors.read_vectors(pipeline, vector_paths)
    scored = (
        shared_vectors.attach_vectors(candidates, vectors, "Candidates")
        | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=8192)
        | "Score" >> beam.ParDo(ScoreDoFn(rule, run_id))
        | "ApplyReview" >> beam.Map(lambda r: review.apply(r, decisions.get(r["key"])))
    )
    # A reviewer's decision is final: reviewed rows are not capped.
    provisional = scored | "PassedRules" >> beam.Filter(
        lambda r: r["status"] == KEPT and r["review_action"] is None
    )
    failed = scored | "FailedOrReviewed" >> beam.Filter(
        lambda r: r["status"] != KEPT or r["review_action"] is not None
    )
    if config.max_per_class > 0:
        provisional = (
            provisional
            | "ByClass" >> beam.Map(lambda r: (r["label"], r))
            | "GroupByClass" >> beam.GroupByKey()
            | "CapPerClass" >> beam.FlatMap(cap_class, config.max_per_class)
        )
    _ = (
        (provisional, failed)
        | "AllRows" >> beam.Flatten()
        | "CountOutcomes" >> beam.Map(_count)
        | "WriteManifest"
        >> beam.io.WriteToParquet(output_prefix, SCHEMA, file_name_suffix=".parquet")
    )


# ------------------------------------------------------------------ the pool pre-pass, truth


def pool_sample(
    work: str, dedup_paths: list[str], spec: teacher.TeacherSpec, config
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``config.pool_sample`` dedup-kept candidates: cached vectors, query classes.

    The OOD cut needs the pool's "query strongly rejected" proxies before any
    candidate is decided, so this pre-pass reads a deterministic sample (by key)
    from the embedding cache; Beam then scores every candidate with the fixed rule.
    """
    table = manifest.read_table(dedup_paths, ["key", "status", "sha256", "query_class"])
    rows = sorted(
        (r for r in table.to_pylist() if r["status"] == KEPT and r["sha256"]),
        key=lambda r: r["key"],
    )
    rows = [rows[i] for i in open_set.sample_pool(len(rows), config.pool_sample, config.seed)]
    found = embedding_cache.vectors_for(work, spec, [r["sha256"] for r in rows])
    rows = [r for r in rows if r["sha256"] in found]
    if not rows:
        return np.zeros((0, 1), np.float32), np.zeros(0, np.int64)
    x = np.stack([np.asarray(found[r["sha256"]], np.float32) for r in rows])
    return x, pseudolabel.class_indices([r["query_class"] for r in rows])


def read_truth(path: str) -> dict[str, int]:
    """A truth CSV: ``key`` or ``url``, and ``true_class`` → {key or url: class index, −1: none}."""
    import csv

    with FileSystems.open(path) as handle:
        rows = list(csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8")))
    if not rows or "true_class" not in rows[0] or not ({"key", "url"} & set(rows[0])):
        raise ValueError(f"{path}: a truth file needs a true_class and a key or url column")
    by = "key" if "key" in rows[0] else "url"
    folders = [r["true_class"] or None for r in rows]
    unknown = sorted({f for f in folders if f and f not in classes.CLASS_FOLDERS})
    if unknown:
        raise ValueError(f"{path}: unknown class folder(s) {', '.join(unknown[:5])}")
    return dict(
        zip((r[by] for r in rows), pseudolabel.class_indices(folders).tolist(), strict=True)
    )


def truth_evaluation(
    work: str,
    table: pa.Table,
    truth: dict[str, int],
    labeled: LabeledSet,
    kfold: pseudolabel.KFoldHeads,
    rule: open_set.OpenSetRule,
    noise: open_set.LabelNoise,
    spec: teacher.TeacherSpec,
) -> dict[str, Any]:
    """Rules (a), (b), (c) on the scored candidates the truth file names: points and curves.

    (c) is the run itself (its manifest rows, cap and review included for the point);
    (a) and (b) are one head on all labeled data, its global threshold swept.
    """
    rows = [
        r
        for r in table.select(
            ["key", "url", "sha256", "status", "reason", "label_index", "confidence", "query_class"]
        ).to_pylist()
        if r["label_index"] is not None and (r["key"] in truth or r["url"] in truth)
    ]
    if not rows:
        return {}
    y = np.array([truth.get(r["key"], truth.get(r["url"], -1)) for r in rows], np.int64)
    on_topic = y >= 0
    found = embedding_cache.vectors_for(work, spec, [r["sha256"] for r in rows])
    x = np.stack([np.asarray(found[r["sha256"]], np.float32) for r in rows])
    single = pseudolabel.fit_head(labeled.vectors, labeled.labels, rule.config.regularization)
    probs = single.predict_proba(x)
    label = np.array([r["label_index"] for r in rows], np.int64)
    confidence = np.array([r["confidence"] for r in rows], np.float64)
    reason = np.array([r["reason"] for r in rows], object)
    query = pseudolabel.class_indices([r["query_class"] for r in rows])
    kept = np.array([r["status"] == KEPT for r in rows])
    path = open_set.tau_path(kfold.oof, labeled.labels, noise, rule.model, rule.config)
    c = pseudolabel.precision_coverage(label, y, kept, on_topic)
    a = pseudolabel.precision_coverage(probs.argmax(1), y, np.ones(len(y), bool), on_topic)
    points = {
        "a": [(a["precision"], a["coverage"])],
        "b": pseudolabel_eval.threshold_sweep(probs.argmax(1), probs.max(1), y, on_topic),
        "c": [
            *pseudolabel_eval.rule_c_points(label, confidence, reason, y, on_topic, path, query),
            *pseudolabel_eval.relaxed_points(rule, x, query, y, on_topic, path),
            (c["precision"], c["coverage"]),
        ],
    }
    return {
        "source": "truth file",
        "candidates": len(rows),
        "on_topic": int(on_topic.sum()),
        "points": points,
        "default": {"a": a, "c": c},
    }


# ------------------------------------------------------------------ the run


def review_summary(
    table: pa.Table,
    candidate_decisions: dict[str, dict[str, Any]],
    official_decisions: dict[str, dict[str, Any]],
    labeled: LabeledSet,
) -> dict[str, Any]:
    """What the reviewers' corrections did, and which ones found nothing to apply to."""
    rows = table.select(["key", "review_action"]).to_pylist()
    applied = collections.Counter(r["review_action"] for r in rows if r["review_action"])
    present = {r["key"] for r in rows}
    train = set(labeled.keys) | {key for key, _ in labeled.skipped}
    official_applied = [k for k in official_decisions if k in train]
    return {
        "candidates": dict(applied),
        "official_training_images": len(official_applied),
        # Never silently ignored: a key that is gone, or an official image outside train.
        "unknown_keys": sorted(k for k in candidate_decisions if k not in present),
        "official_not_applied": sorted(k for k in official_decisions if k not in train),
    }


def write_oof(path: str, labeled: LabeledSet, kfold: pseudolabel.KFoldHeads) -> None:
    """Per labeled image: its fold and OOF probabilities (for review in FiftyOne)."""
    table = pa.table(
        {
            "key": labeled.keys,
            "label_index": labeled.labels,
            "fold": kfold.fold,
            "oof": [list(map(float, p)) for p in kfold.oof],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    manifest.write_bytes(path, buffer.getvalue())


def run_pseudolabel(
    work: str,
    labeled_root: str,
    config: pseudolabel.PseudolabelConfig = pseudolabel.DEFAULT_CONFIG,
    spec: teacher.TeacherSpec = teacher.DEFAULT_TEACHER,
    beam_args: Sequence[str] = (),
    truth: str | None = None,
) -> dict[str, Any]:
    """Trains the K heads, scores every dedup-kept candidate, writes manifest and report.

    ``truth``: an optional CSV of known classes of candidates (``key`` or ``url``, and
    ``true_class``: a class folder, empty for none) for the report's precision-coverage
    curves against the truth.
    """
    work = workdir.absolute(work)
    with workdir.stage_run(work, STAGE):
        return _run_pseudolabel(work, labeled_root, config, spec, beam_args, truth)


def _run_pseudolabel(
    work: str,
    labeled_root: str,
    config: pseudolabel.PseudolabelConfig,
    spec: teacher.TeacherSpec,
    beam_args: Sequence[str],
    truth: str | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    truth_rows = read_truth(truth) if truth else None  # a bad file fails before the work
    latest_dedup = manifest.require_run(
        work, "dedup", f"camsdd dedup --work {work} --reference {labeled_root}"
    )
    vector_paths = embedding_cache.cached_paths(work, spec)
    if not vector_paths:
        raise FileNotFoundError(
            f"no {spec.model_id} embeddings in "
            f"{embedding_cache.model_dir(work, spec)}: run "
            f"`camsdd embed --work {work} --reference {labeled_root}` first"
        )
    decisions = corrections.read(work)
    candidate_decisions = corrections.by_key(decisions, corrections.CANDIDATE)
    official_decisions = corrections.by_key(decisions, corrections.OFFICIAL)
    if candidate_decisions:
        known = set(manifest.read_table(latest_dedup[1], ["key"]).column("key").to_pylist())
        corrections.check_known(work, candidate_decisions, known)
    labeled = labeled_training(labeled_root, work, spec, beam_args, official_decisions)
    train_started = time.monotonic()
    kfold = pseudolabel.train_kfold(labeled.vectors, labeled.labels, config)
    pool_x, pool_query = pool_sample(work, latest_dedup[1], spec, config)
    rule, noise = open_set.fit_rule(
        labeled.vectors, labeled.labels, kfold, pool_x, pool_query, config
    )
    train_seconds = time.monotonic() - train_started

    run_id = manifest.new_run_id()
    options = PipelineOptions(beam_options.with_local_runner(list(beam_args)))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(
            pipeline,
            dedup_paths=latest_dedup[1],
            vector_paths=vector_paths,
            rule=rule,
            output_prefix=manifest.manifest_prefix(work, STAGE, run_id),
            run_id=run_id,
            decisions=candidate_decisions,
        )
    counters = beam_options.counters(pipeline.result, NAMESPACE)
    latest = manifest.latest_run(work, STAGE)
    if latest is None or latest[0] != run_id:
        raise RuntimeError(f"the pseudolabel run {run_id} wrote no complete manifest")
    table = manifest.read_table(latest[1])
    manifest.delete_other_runs(work, STAGE, run_id)

    stage_dir = manifest.stage_dir(work, STAGE)
    write_oof(FileSystems.join(stage_dir, "oof.parquet"), labeled, kfold)
    report = pseudolabel_report.build(
        table,
        labeled=labeled,
        kfold=kfold,
        rule=rule,
        noise=noise,
        pool_size=len(pool_x),
        counters=counters,
        model=spec.model_id,
        seconds=time.monotonic() - started,
        train_seconds=train_seconds,
        run_id=run_id,
    )
    report["manifest"] = latest[1]
    report["review"] = review_summary(table, candidate_decisions, official_decisions, labeled)
    manifest.write_bytes(
        FileSystems.join(stage_dir, "label_issues.csv"),
        pseudolabel_report.label_issues_csv(labeled, kfold).encode(),
    )
    oof_curves = pseudolabel_report.oof_curves(labeled, kfold, rule, noise)
    truth_curves = None
    if truth:
        truth_curves = truth_evaluation(work, table, truth_rows, labeled, kfold, rule, noise, spec)
        report["truth"] = pseudolabel_report.curve_summary(truth_curves) | {"file": truth}
    report["oof_curves"] = pseudolabel_report.curve_summary(oof_curves)
    pngs = pseudolabel_report.plots(table, labeled, kfold, rule.model.thresholds)
    pngs["precision_coverage.png"] = pseudolabel_report.curve_plot(oof_curves, truth_curves)
    for name, png in pngs.items():
        manifest.write_bytes(FileSystems.join(stage_dir, name), png)
    report["report_files"] = list(
        manifest.write_report(work, STAGE, report, pseudolabel_report.render_markdown(report))
    )
    return report

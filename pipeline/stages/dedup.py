"""``camsdd dedup``: the Beam pipeline that drops duplicates and leaks of labeled images.

::

  W/fetch/manifest (kept rows)          CAMSDD_ROOT train/validation/test (+ hashes)
        │                                       │  side input, built once
        ├── MatchReference (batches, HammingIndex; cosine on embeddings) ──┐
        ├── hash buckets → GroupByKey → verify pairs ──┐                   │
        ├── equal sha256 → GroupByKey ─────────────────┤                   │
        │                                   edges → connected components   │
        └─────────── CoGroupByKey(candidate, cluster, reference matches) ──┘
                          → GroupByKey(cluster) → decide → W/dedup/manifest-*.parquet

Bucketing is the multi-index hashing of ``pipeline.core.hamming`` done by Beam's
shuffle: each candidate emits one key per table and flip (stored or probed side),
candidates sharing a key are verified with the exact distance.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared

from pipeline.core import dedup, hamming, lsh, schema
from pipeline.models import teacher
from pipeline.reports import dedup_report
from pipeline.stages import fetch_record as fetch
from pipeline.stages import options as beam_options
from pipeline.stages import reference as reference_stage
from pipeline.stages import vectors as shared_vectors
from pipeline.store import embedding_cache, manifest, workdir

NAMESPACE = "camsdd.dedup"
STAGE = "dedup"
#: Columns added to the fetch row.
DEDUP_COLUMNS = [
    ("cluster", pa.string()),
    ("cluster_size", pa.int64()),
    ("match_key", pa.string()),
    ("match_kind", pa.string()),
    ("match_distance", pa.float64()),
    ("fetch_run_id", pa.string()),
]
SCHEMA = pa.schema(
    [f for f in fetch.SCHEMA if f.name not in ("run_id",)]
    + [pa.field(name, kind) for name, kind in DEDUP_COLUMNS]
    + [pa.field("run_id", pa.string())]
)


class ReferenceIndex:
    """The labeled images' hash codes and normalized vectors, ready to match batches."""

    def __init__(self, reference: list[dict[str, Any]], ref_vectors: dict[str, Any]):
        Metrics.counter(NAMESPACE, "reference_index_builds").inc()
        self.refs = reference
        self.codes = dedup.reference_codes(reference)
        self.sha = {r["sha256"]: i for i, r in enumerate(reference)}
        self.vector_refs = [r for r in reference if r["key"] in ref_vectors]
        self.vectors = (
            dedup.normalize_rows(np.stack([ref_vectors[r["key"]] for r in self.vector_refs]))
            if self.vector_refs
            else None
        )


class MatchReferenceDoFn(beam.DoFn):
    """A batch of candidates → (key, [(split, Match)]) for those matching a labeled image.

    The reference index is built once per worker process (``beam.utils.shared``), from
    the side inputs of the first batch, and shared by the process's DoFn instances
    (threads, and those that replace an instance after a failed bundle).
    """

    def __init__(self, config: dedup.DedupConfig):
        self.config = config
        self._shared = shared.Shared()
        self._tag = uuid.uuid4().hex  # this pipeline's reference: never another run's

    def setup(self) -> None:
        self._index: ReferenceIndex | None = None

    def process(self, batch, reference, ref_vectors):
        if self._index is None:
            self._index = self._shared.acquire(
                lambda: ReferenceIndex(reference, ref_vectors), tag=self._tag
            )
        index = self._index
        found: dict[str, list[tuple[str, dedup.Match]]] = {}

        def add(row, ref, kind, distance):
            found.setdefault(row["key"], []).append(
                (ref["split"], dedup.Match(ref["key"], kind, float(distance)))
            )

        for row in batch:
            for column in ("source_sha256", "sha256"):
                if row.get(column) in index.sha:
                    add(row, index.refs[index.sha[row[column]]], "sha256", 0)
        if len(index.refs):
            hits = dedup.hash_matches(dedup.probe_codes(batch), index.codes, self.config.radius)
            for left, right, distance in zip(hits.left, hits.right, hits.distance, strict=True):
                add(batch[left], index.refs[right], "phash", distance)
        if index.vectors is not None and self.config.embeddings:
            with_vectors = [r for r in batch if r.get("embedding") is not None]
            if with_vectors:
                queries = dedup.normalize_rows(np.stack([r["embedding"] for r in with_vectors]))
                left, right, sims = dedup.cosine_matches(
                    queries, index.vectors, self.config.min_cosine
                )
                for i, j, sim in zip(left, right, sims, strict=True):
                    add(with_vectors[i], index.vector_refs[j], "embedding", round(1 - sim, 4))
        yield from found.items()


# ------------------------------------------------------------------ candidate pairs


def bucket_entries(row: dict[str, Any], radius: int) -> Iterable[tuple[tuple, tuple]]:
    """(bucket, (role, key, codes)) for one candidate: the multi-index hashing keys.

    role ``b`` pairs with anything, ``s`` (stored side) with ``p`` (probed side).
    """
    codes = tuple(int(c) for c in dedup.row_codes(row))
    radii = hamming.table_radii(radius)
    for kind, code in enumerate(codes):
        for table, ((shift, width), table_radius) in enumerate(
            zip(hamming.substrings(radius), radii, strict=True)
        ):
            if table_radius < 0:
                continue
            value = (code >> shift) & ((1 << width) - 1)
            stored, probed = hamming.split_radius(table_radius)
            if stored == probed:
                for mask in hamming.flip_masks(width, stored):
                    yield (kind, table, value ^ mask), ("b", row["key"], codes)
            else:
                for mask in hamming.flip_masks(width, stored):
                    yield (kind, table, value ^ mask), ("s", row["key"], codes)
                for mask in hamming.flip_masks(width, probed):
                    yield (kind, table, value ^ mask), ("p", row["key"], codes)


def verify_bucket(element, radius: int) -> Iterable[tuple[tuple[str, str], float]]:
    """((key, key), distance) of every pair in one bucket within the radius."""
    _, entries = element
    entries = sorted(set(entries))
    if len(entries) < 2:
        return
    roles = np.array([e[0] for e in entries])
    keys = [e[1] for e in entries]
    codes = np.array([e[2] for e in entries], np.uint64)
    for i in range(len(entries)):
        distance = dedup.pair_distance(codes[i][None, :], codes[i + 1 :])
        for offset in np.flatnonzero(distance <= radius):
            j = i + 1 + offset
            pairable = "b" in (roles[i], roles[j]) or roles[i] != roles[j]
            if pairable and keys[i] != keys[j]:
                yield tuple(sorted((keys[i], keys[j]))), float(distance[offset])


def equal_digest_pairs(element) -> Iterable[tuple[tuple[str, str], float]]:
    """Candidates with equal sha256 (source or output): a star onto the first key."""
    _, keys = element
    keys = sorted(set(keys))
    for other in keys[1:]:
        yield (keys[0], other), 0.0


def cluster_ids(edges: list[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    """(key, cluster id) for every key on an edge; the id is the cluster's smallest key."""
    if not edges:
        return
    names = sorted({k for edge in edges for k in edge})
    index = {name: i for i, name in enumerate(names)}
    left = np.array([index[a] for a, _ in edges])
    right = np.array([index[b] for _, b in edges])
    labels = dedup.components(len(names), left, right)
    first: dict[int, str] = {}
    for name, label in zip(names, labels, strict=True):
        first.setdefault(int(label), name)
    for name, label in zip(names, labels, strict=True):
        yield name, first[int(label)]


class DecideClusterDoFn(beam.DoFn):
    def __init__(self, run_id: str):
        self.run_id = run_id

    def process(self, element):
        _, members = element
        rows = [row for row, _ in members]
        reference_matches = {row["key"]: matches for row, matches in members if matches}
        for out in dedup.decide_cluster(rows, reference_matches, dedup.member_link):
            Metrics.counter(NAMESPACE, schema.outcome(out, dedup.reason_family)).inc()
            out.pop("embedding", None)
            out["fetch_run_id"] = out.get("run_id")
            out["run_id"] = self.run_id
            yield {name: out.get(name) for name in SCHEMA.names}


def _join(element):
    key, grouped = element
    rows, clusters, matches = grouped["row"], grouped["cluster"], grouped["reference"]
    if not rows:
        return
    cluster = clusters[0] if clusters else key
    yield cluster, (rows[0], matches[0] if matches else [])


class MeanVectorFn(beam.CombineFn):
    """The mean of equal-length vectors (None for none)."""

    def create_accumulator(self):
        return None, 0

    def add_input(self, accumulator, vector):
        total, count = accumulator
        vector = np.asarray(vector, np.float64)
        return (vector if total is None else total + vector), count + 1

    def merge_accumulators(self, accumulators):
        total, count = None, 0
        for part, n in accumulators:
            if part is not None:
                total = part if total is None else total + part
            count += n
        return total, count

    def extract_output(self, accumulator):
        total, count = accumulator
        return None if total is None else total / count


def build_pipeline(
    pipeline: beam.Pipeline,
    *,
    work: str,
    fetch_paths: list[str],
    reference: list[dict[str, Any]],
    config: dedup.DedupConfig,
    run_id: str,
    vector_paths: list[str] | None,
) -> None:
    """Wires the dedup pipeline; ``vector_paths`` (the embedding cache) adds cosine matching."""
    candidates = (
        pipeline
        | "FetchManifests" >> beam.Create(fetch_paths)
        | "ReadFetch" >> beam.io.ReadAllFromParquet()
        | "FetchKept" >> beam.Filter(lambda r: r["status"] == schema.KEPT)
        | "Count inputs" >> beam.Map(_count_input)
    )
    # The labeled images' hashes come from W/reference: nothing is decoded again here.
    labeled = pipeline | "ListReference" >> beam.Create(reference)
    use_vectors = bool(vector_paths) and config.embeddings
    if use_vectors:
        vectors = shared_vectors.read_vectors(pipeline, vector_paths)
        candidates = shared_vectors.attach_vectors(candidates, vectors, "Candidates")
        ref_vectors = beam.pvalue.AsDict(
            shared_vectors.attach_vectors(labeled, vectors, "Reference")
            | "ReferenceWithVector" >> beam.Filter(lambda r: r["embedding"] is not None)
            | "KeyReferenceVector" >> beam.Map(lambda r: (r["key"], r["embedding"]))
        )
    else:
        ref_vectors = beam.pvalue.AsDict(pipeline | "NoVectors" >> beam.Create([]))
    ref_list = beam.pvalue.AsList(labeled)
    reference_matches = (
        candidates
        | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=4096)
        | "MatchReference"
        >> beam.ParDo(MatchReferenceDoFn(config), reference=ref_list, ref_vectors=ref_vectors)
    )
    hash_edges = (
        candidates
        | "HashBuckets" >> beam.FlatMap(bucket_entries, config.radius)
        | "GroupBuckets" >> beam.GroupByKey()
        | "VerifyBuckets" >> beam.FlatMap(verify_bucket, config.radius)
    )
    digest_edges = (
        candidates
        | "Digests"
        >> beam.FlatMap(
            lambda r: [(("src", r["source_sha256"]), r["key"]), (("out", r["sha256"]), r["key"])]
        )
        | "GroupDigests" >> beam.GroupByKey()
        | "DigestPairs" >> beam.FlatMap(equal_digest_pairs)
    )
    edge_sources = [hash_edges, digest_edges]
    if use_vectors:
        # The hyperplanes cut through the pool's mean (pipeline.core.lsh): else buckets fill.
        pool_mean = beam.pvalue.AsSingleton(
            candidates
            | "EmbeddingVectors"
            >> beam.FlatMap(lambda r: [] if r["embedding"] is None else [r["embedding"]])
            | "PoolMean" >> beam.CombineGlobally(MeanVectorFn())
        )
        edge_sources.append(
            candidates
            | "EmbeddingBuckets" >> beam.FlatMap(lsh.lsh_buckets, pool_mean)
            | "GroupEmbeddingBuckets" >> beam.GroupByKey()
            | "VerifyEmbeddingBuckets" >> beam.FlatMap(lsh.verify_bucket, config.min_cosine)
        )
    clusters = (
        edge_sources
        | "AllEdges" >> beam.Flatten()
        | "OneEdgePerPair" >> beam.CombinePerKey(min)
        | "EdgeList" >> beam.combiners.ToList()
        | "Components" >> beam.FlatMap(lambda edges: cluster_ids([pair for pair, _ in edges]))
    )
    _ = (
        {
            "row": candidates | "KeyRows" >> beam.Map(lambda r: (r["key"], r)),
            "cluster": clusters,
            "reference": reference_matches,
        }
        | "JoinOnKey" >> beam.CoGroupByKey()
        | "KeyByCluster" >> beam.FlatMap(_join)
        | "GroupClusters" >> beam.GroupByKey()
        | "Decide" >> beam.ParDo(DecideClusterDoFn(run_id))
        | "WriteManifest"
        >> beam.io.WriteToParquet(
            manifest.manifest_prefix(work, STAGE, run_id), SCHEMA, file_name_suffix=".parquet"
        )
    )


def _count_input(row):
    Metrics.counter(NAMESPACE, "inputs").inc()
    return row


def run_dedup(
    work: str,
    reference_root: str | None,
    config: dedup.DedupConfig = dedup.DEFAULT_CONFIG,
    beam_args: Sequence[str] = (),
    spec: teacher.TeacherSpec = teacher.DEFAULT_TEACHER,
) -> dict[str, Any]:
    """Runs dedup to the end, swaps in the new manifest, writes the report.

    Teacher embeddings are used when ``camsdd embed`` cached them for ``spec``.
    """
    work = workdir.absolute(work)
    with workdir.stage_run(work, STAGE):
        return _run_dedup(work, reference_root, config, beam_args, spec)


def _run_dedup(
    work: str,
    reference_root: str | None,
    config: dedup.DedupConfig,
    beam_args: Sequence[str],
    spec: teacher.TeacherSpec,
) -> dict[str, Any]:
    started = time.monotonic()
    latest_fetch = manifest.require_run(work, "fetch", f"camsdd fetch --work {work}")
    rows = reference_stage.ensure_reference(work, reference_root, beam_args)
    reference = [r for r in rows if r["status"] == schema.KEPT]
    vector_paths = embedding_cache.cached_paths(work, spec) if config.embeddings else []
    run_id = manifest.new_run_id()
    options = PipelineOptions(beam_options.with_local_runner(list(beam_args)))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(
            pipeline,
            work=work,
            fetch_paths=latest_fetch[1],
            reference=reference,
            config=config,
            run_id=run_id,
            vector_paths=vector_paths,
        )
    counters = beam_options.counters(pipeline.result, NAMESPACE)
    latest = manifest.latest_run(work, STAGE)
    if latest is None or latest[0] != run_id:
        raise RuntimeError(f"the dedup run {run_id} wrote no complete manifest")
    table = manifest.read_table(latest[1])
    manifest.delete_other_runs(work, STAGE, run_id)
    report = dedup_report.build(
        table,
        counters=counters,
        reference=dedup_report.reference_summary(rows),
        config=dataclasses.asdict(config),
        embeddings_model=spec.model_id if vector_paths else None,
        seconds=time.monotonic() - started,
        run_id=run_id,
    )
    report["manifest"] = latest[1]
    if report["leaks"] or report["clusters"]:
        report["contact_sheet"] = "contact_sheet.png"
        dedup_report.contact_sheet(
            report,
            {r["key"]: r["path"] for r in rows},
            FileSystems.join(manifest.stage_dir(work, STAGE), "contact_sheet.png"),
            work,
        )
    report["report_files"] = list(
        manifest.write_report(work, STAGE, report, dedup_report.render_markdown(report))
    )
    return report

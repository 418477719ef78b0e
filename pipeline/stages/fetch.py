"""``camsdd fetch``: the Beam pipeline from crawl records to 576×384 JPEGs.

::

  W/crawl/manifest-*.parquet (kept records)   W/fetch/manifest-<previous run> (if any)
                 \\                                 + W/fetch/checkpoint/part-* (a killed run's)
                  CoGroupByKey on key: one decision per key
                 /                                  \\
   fetch: download → decode → filter → resize → store     reuse: kept (image still there)
          (finished rows → W/fetch/checkpoint/part-*)     or dropped for good
                 \\
                  Flatten → W/fetch/manifest-<run>-*.parquet → report.json / report.md

A run that is killed keeps what it finished in checkpoint parts (a few seconds of
work at most is lost); the next run reuses those rows as it reuses the previous
manifest's, and a run that completes deletes them once its manifest is in place.

Downloads run ``--threads`` at a time inside each worker (IO-bound), decoding
in the same threads (PIL releases the GIL while decoding and resizing).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from crawlers.http import PoliteClient
from pipeline.core import schema
from pipeline.reports import fetch_report
from pipeline.stages import fetch_record as fetch
from pipeline.stages import options as beam_options
from pipeline.store import manifest, workdir

NAMESPACE = "camsdd.fetch"
STAGE = "fetch"


#: Marks a row read from a checkpoint part (newer than the previous manifest's row).
FROM_CHECKPOINT = "_from_checkpoint"


class DecideDoFn(beam.DoFn):
    """Per key: reuse the previous run's row, or send the candidate to be fetched.

    A killed run's checkpoint row is newer than the previous manifest's: it wins; of
    several (a key fetched by two killed runs), the last fetched.
    """

    FETCH = "fetch"

    def __init__(self, settings: fetch.FetchSettings, retry_transient: bool):
        self.settings = settings
        self.retry_transient = retry_transient
        self.inputs = Metrics.counter(NAMESPACE, "inputs")
        self.reused = Metrics.counter(NAMESPACE, "reused")
        self.resumed = Metrics.counter(NAMESPACE, "resumed")
        self.conflicts = Metrics.counter(NAMESPACE, "label_conflicts")

    def process(self, element: tuple[str, dict[str, list[dict[str, Any]]]]):
        _key, grouped = element
        # A key no longer in the crawl has no candidate: its old row goes away.
        if grouped["candidate"]:
            yield self._decide(grouped["candidate"], grouped["previous"])

    def _decide(self, candidates: list[dict[str, Any]], previous: list[dict[str, Any]]):
        self.inputs.inc()
        # The same URL in two crawls (two lists, say) with two labels: counted and
        # reported; the alphabetically first label is used, the same on every run.
        candidates = sorted(candidates, key=lambda r: (r.get("query_class") or "", str(r)))
        if len({r.get("query_class") for r in candidates}) > 1:
            self.conflicts.inc()
        checkpointed = [r for r in previous if r.get(FROM_CHECKPOINT)]
        if checkpointed:
            previous = [max(checkpointed, key=lambda r: (r.get("fetched_at") or "", str(r)))]
        row = (
            fetch.reuse(previous[0], candidates[0], self.settings, self.retry_transient)
            if previous
            else None
        )
        if row is None:
            return beam.pvalue.TaggedOutput(self.FETCH, candidates[0])
        self.reused.inc()
        if checkpointed:
            self.resumed.inc()
        return row


class FetchBatchDoFn(beam.DoFn):
    """Fetches a batch of candidates on a thread pool; one row per candidate.

    Finished rows go to a checkpoint part every CHECKPOINT_ROWS rows or
    CHECKPOINT_SECONDS seconds, and at the end of each batch.
    """

    CHECKPOINT_ROWS = 32
    CHECKPOINT_SECONDS = 2.0

    def __init__(self, settings: fetch.FetchSettings, threads: int):
        self.settings = settings
        self.threads = threads
        self.bytes = Metrics.counter(NAMESPACE, "bytes_downloaded")
        self.latency = Metrics.distribution(NAMESPACE, "milliseconds_per_candidate")

    def setup(self) -> None:
        self.client = PoliteClient(self.settings.client_config(), pool_size=self.threads)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads)

    def process(self, batch: list[dict[str, Any]]):
        running = {
            self.pool.submit(fetch.fetch_candidate, record, self.client, self.settings)
            for record in batch
        }
        pending: list[dict[str, Any]] = []
        flushed = time.monotonic()
        while running:
            # Wakes at least every CHECKPOINT_SECONDS, so a finished row is checkpointed
            # even while a slow download holds the rest of the batch.
            done, running = concurrent.futures.wait(
                running,
                timeout=self.CHECKPOINT_SECONDS,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
            for future in done:
                row = future.result()
                self.bytes.inc(row["bytes"] or 0)
                self.latency.update(int(row["seconds"] * 1000))
                pending.append(row)
            if pending and (
                not running
                or len(pending) >= self.CHECKPOINT_ROWS
                or time.monotonic() - flushed >= self.CHECKPOINT_SECONDS
            ):
                yield from self._checkpoint(pending)
                pending, flushed = [], time.monotonic()

    def _checkpoint(self, rows: list[dict[str, Any]]):
        if rows:
            manifest.write_checkpoint(self.settings.work, STAGE, rows, fetch.SCHEMA)
        yield from rows

    def teardown(self) -> None:
        self.pool.shutdown()
        self.client.close()


def _count(row: dict[str, Any]) -> dict[str, Any]:
    name = schema.outcome(row)
    Metrics.counter(NAMESPACE, name).inc()
    return row


def build_pipeline(
    pipeline: beam.Pipeline,
    settings: fetch.FetchSettings,
    crawl_paths: list[str],
    previous_paths: list[str],
    *,
    threads: int = 16,
    retry_transient: bool = True,
    checkpoint_paths: Sequence[str] = (),
) -> None:
    candidates = (
        pipeline
        | "CrawlManifests" >> beam.Create(crawl_paths)
        | "ReadCrawl" >> beam.io.ReadAllFromParquet()
        | "CrawlKept" >> beam.Filter(lambda r: r["status"] == schema.KEPT)
        | "KeyCandidates" >> beam.Map(lambda r: (r["key"], r))
    )
    previous = (
        pipeline
        | "PreviousManifests" >> beam.Create(previous_paths)
        | "ReadPrevious" >> beam.io.ReadAllFromParquet()
        | "KeyPrevious" >> beam.Map(lambda r: (r["key"], r))
    )
    checkpointed = (
        pipeline
        | "CheckpointParts" >> beam.Create(list(checkpoint_paths))
        | "ReadCheckpoint" >> beam.io.ReadAllFromParquet()
        | "KeyCheckpoint" >> beam.Map(lambda r: (r["key"], {**r, FROM_CHECKPOINT: True}))
    )
    previous = (previous, checkpointed) | "PreviousAndCheckpoint" >> beam.Flatten()
    decided = (
        {"candidate": candidates, "previous": previous}
        | "JoinOnKey" >> beam.CoGroupByKey()
        | "Decide"
        >> beam.ParDo(DecideDoFn(settings, retry_transient)).with_outputs(
            DecideDoFn.FETCH, main="reused"
        )
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
    settings = dataclasses.replace(settings, work=workdir.absolute(settings.work))
    with workdir.stage_run(settings.work, STAGE):
        return _run_fetch(settings, beam_args, threads, retry_transient, crawl_pattern)


def _run_fetch(
    settings: fetch.FetchSettings,
    beam_args: Sequence[str],
    threads: int,
    retry_transient: bool,
    crawl_pattern: str | None,
) -> dict[str, Any]:
    started = time.monotonic()
    if crawl_pattern:
        crawl_paths = workdir.match(crawl_pattern)
    else:  # the newest run of every crawl in the work dir
        crawl_pattern = FileSystems.join(settings.work, "crawl", "*", "manifest-*.parquet")
        crawl_paths = [p for paths in manifest.crawl_runs(settings.work).values() for p in paths]
    if not crawl_paths:
        raise FileNotFoundError(
            f"no crawl manifest matches {crawl_pattern}: run `camsdd crawl --work "
            f"{settings.work} …` first"
        )
    manifest.check_readable(crawl_paths, "rerun `camsdd crawl` with that --name to rewrite it")
    previous = manifest.latest_run(settings.work, STAGE)
    previous_paths = previous[1] if previous else []
    manifest.check_readable(
        previous_paths, "delete it to fetch everything again (the image store is kept)"
    )
    checkpoint_paths = manifest.checkpoint_paths(settings.work, STAGE)
    manifest.check_readable(
        checkpoint_paths, "delete it to fetch its candidates again (the image store is kept)"
    )
    settings = dataclasses.replace(settings, run_id=manifest.new_run_id())
    options = PipelineOptions(beam_options.with_local_runner(list(beam_args)))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(
            pipeline,
            settings,
            crawl_paths,
            previous_paths,
            threads=threads,
            retry_transient=retry_transient,
            checkpoint_paths=checkpoint_paths,
        )
    result = pipeline.result
    counters = beam_options.counters(result, NAMESPACE)
    latest = manifest.latest_run(settings.work, STAGE)
    if latest is None or latest[0] != settings.run_id:
        raise RuntimeError(f"the fetch run {settings.run_id} wrote no complete manifest")
    table = manifest.read_table(latest[1])
    manifest.delete_other_runs(settings.work, STAGE, settings.run_id)
    manifest.clear_checkpoint(settings.work, STAGE)  # every row is in the manifest now
    report = fetch_report.build(
        table,
        inputs=counters.get("inputs", 0),
        reused=counters.get("reused", 0),
        resumed=counters.get("resumed", 0),
        seconds=time.monotonic() - started,
        counters=counters,
        run_id=settings.run_id,
    )
    report["settings"] = {**dataclasses.asdict(settings), "threads": threads}
    report["settings"]["retry_transient"] = retry_transient
    report["manifest"] = latest[1]
    report["report_files"] = list(fetch_report.write(settings.work, report))
    return report

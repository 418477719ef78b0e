"""A DoFn that checkpoints the rows passing through it, so a killed run keeps them.

::

  rows ──► CheckpointDoFn ──► the same rows (on to the run's final write)
                 │ every ``rows`` rows or ``seconds`` seconds, and at the end of a bundle
                 ▼
         W/<stage>/checkpoint/part-<uuid>.parquet  (``manifest.write_checkpoint``)

A run's output appears only when the run ends; these parts are what a killed run
(SIGKILL, Ctrl-C, a lost worker) leaves behind, and the next run reuses their rows.
A part is written whole or not at all. A bundle that Beam retries may checkpoint some
rows twice: readers keep one row per key. A work dir that stops taking writes stops
the run with ``workdir.WorkDirError``.
"""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
import pyarrow as pa

from pipeline.store import manifest


class CheckpointDoFn(beam.DoFn):
    """Passes rows on unchanged; writes them as checkpoint parts of ``stage`` as it goes."""

    def __init__(
        self, work: str, stage: str, schema: pa.Schema, rows: int = 32, seconds: float = 2.0
    ):
        self.work = work
        self.stage = stage
        self.schema = schema
        self.rows = rows
        self.seconds = seconds

    def start_bundle(self) -> None:
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()

    def process(self, row: dict[str, Any]):
        self._pending.append(row)
        if len(self._pending) >= self.rows or time.monotonic() - self._flushed >= self.seconds:
            self._flush()
        yield row

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            manifest.write_checkpoint(self.work, self.stage, self._pending, self.schema)
        self._pending, self._flushed = [], time.monotonic()

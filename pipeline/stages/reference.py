"""The labeled images' reference rows (``W/reference/``), hashed once, in Beam.

::

  CAMSDD_ROOT listing (path, size) ⋈ W/reference (previous run)
      → unchanged rows reused; new or changed files → Reshuffle → read + sha256 + pHashes
      → W/reference/manifest-<run>-00000-of-00001.parquet

``camsdd embed``, ``dedup`` and ``pseudolabel`` call ``ensure_reference`` first: on an
unchanged tree it reads one Parquet file and hashes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.stages import options as beam_options
from pipeline.store import manifest, reference, workdir


def ensure_reference(
    work: str, root: str | None, beam_args: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The reference rows of every labeled image under ``root`` (hashing only what is new).

    No root (a stage run without ``--reference``): no rows.
    """
    if not root:
        return []
    files = reference.labeled_files(root)
    with workdir.stage_lock(work, reference.STAGE):
        fresh, stale = reference.to_hash(reference.read(work), files)
        if not stale and len(fresh) == len(files):
            return fresh
        hashed = _hash_in_beam(work, stale, beam_args) if stale else []
        rows = fresh + hashed
        reference.write(work, rows)
    return rows


def _hash_in_beam(work: str, stale, beam_args: Sequence[str]) -> list[dict[str, Any]]:
    prefix = workdir.join(work, reference.STAGE, "hashed")
    options = PipelineOptions(beam_options.with_local_runner(list(beam_args)))
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "ListLabeled" >> beam.Create(stale)
            | "Spread" >> beam.Reshuffle()
            | "Hash" >> beam.MapTuple(reference.hash_file)
            | "Write"
            >> beam.io.WriteToParquet(prefix, reference.SCHEMA, file_name_suffix=".parquet")
        )
    paths = workdir.match(prefix + "*.parquet")
    rows = manifest.read_table(paths).to_pylist()
    FileSystems.delete(paths)
    return rows

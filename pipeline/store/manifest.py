"""Per-stage Parquet manifests: ``W/<stage>/manifest-<run_id>-SSSSS-of-NNNNN.parquet``.

Each run of a Beam stage writes a complete manifest (one row per input key)
under a new run id, then deletes the previous run's shards. A crash between
the two leaves both; readers take the newest complete run, so a manifest is
never half old, half new. All IO goes through Beam's ``FileSystems`` (local
paths or ``gs://``).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import sys
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.core.errors import UserError
from pipeline.store import parquet_io, workdir

_SHARD = re.compile(
    r"manifest-(?P<run>\d{8}T\d{6}-[0-9a-f]{6})-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet$"
)


class ManifestError(UserError, ValueError):
    """A manifest that cannot be read (empty, truncated, not Parquet); names the file."""


def check_readable(paths: list[str], remedy: str) -> None:
    """Raises ManifestError naming the first of ``paths`` that is not a whole Parquet file.

    Reads only each file's footer. Stages check their inputs with it before running, so
    a damaged input is one clear error instead of rows that silently vanish.
    """
    for path in paths:
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                pq.read_metadata(handle)
        except Exception as error:  # pyarrow raises several types for damaged files
            raise ManifestError(
                f"{path} is not a readable Parquet file ({_short(error)}): {remedy}"
            ) from None


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:160]


def new_run_id() -> str:
    """Sortable and unique: UTC time plus a random suffix."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def stage_dir(work: str, stage: str) -> str:
    return FileSystems.join(work, stage)


def manifest_prefix(work: str, stage: str, run_id: str) -> str:
    """``file_path_prefix`` for Beam's WriteToParquet."""
    return FileSystems.join(stage_dir(work, stage), f"manifest-{run_id}")


def _shards(work: str, stage: str) -> dict[str, list[tuple[str, int, int]]]:
    pattern = FileSystems.join(stage_dir(work, stage), "manifest-*.parquet")
    paths = workdir.match(pattern)
    return shards_by_run(paths)


def shards_by_run(paths: list[str]) -> dict[str, list[tuple[str, int, int]]]:
    """run id → [(path, shard index, shard count)] of the manifest shards among ``paths``."""
    runs: dict[str, list[tuple[str, int, int]]] = {}
    for path in paths:
        found = _SHARD.search(path)
        if found:
            runs.setdefault(found["run"], []).append((path, int(found["i"]), int(found["n"])))
    return runs


def newest_complete_run(paths: list[str]) -> tuple[str, list[str]] | None:
    """Among manifest shard paths, the newest run whose shards are all present."""
    for run_id, shards in sorted(shards_by_run(paths).items(), reverse=True):
        total = shards[0][2]
        if len({index for _, index, _ in shards}) == total:
            return run_id, sorted(path for path, _, _ in shards)
    return None


def latest_run(work: str, stage: str) -> tuple[str, list[str]] | None:
    """The newest run whose shards are all present: (run_id, paths), or None."""
    runs = _shards(work, stage)
    return newest_complete_run([path for shards in runs.values() for path, _, _ in shards])


def crawl_runs(work: str) -> dict[str, list[str]]:
    """Crawl name → the shards of its newest complete run (``W/crawl/<name>/manifest-*``)."""
    by_folder: dict[str, list[str]] = {}
    for path in workdir.match(
        FileSystems.join(stage_dir(work, "crawl"), "*", "manifest-*.parquet")
    ):
        by_folder.setdefault(path.rsplit("/", 2)[-2], []).append(path)
    runs = {}
    for name, paths in by_folder.items():
        newest = newest_complete_run(paths)
        if newest is not None:
            runs[name] = newest[1]
    return runs


def require_run(work: str, stage: str, command: str) -> tuple[str, list[str]]:
    """The newest complete run of ``stage``, checked readable; else a one-line error
    saying which command makes it."""
    latest = latest_run(work, stage)
    if latest is None:
        raise FileNotFoundError(
            f"no {stage} manifest in {stage_dir(work, stage)}: run `{command}` first"
        )
    check_readable(latest[1], f"rerun `camsdd {stage}` to rewrite it")
    return latest


def delete_other_runs(work: str, stage: str, keep_run_id: str) -> int:
    """Deletes every manifest shard not of ``keep_run_id``; returns how many."""
    stale = [
        path
        for run_id, shards in _shards(work, stage).items()
        if run_id != keep_run_id
        for path, _, _ in shards
    ]
    if stale:
        FileSystems.delete(stale)
    return len(stale)


def read_parquet(path: str, columns: list[str] | None = None, filters: Any = None) -> pa.Table:
    """One Parquet file, local or ``gs://``, as a table (``parquet_io`` says why so)."""
    return parquet_io.table_from_bytes(workdir.read_bytes(path), columns, filters)


def read_table(paths: list[str], columns: list[str] | None = None) -> pa.Table:
    tables = [read_parquet(path, columns) for path in paths]
    return pa.concat_tables(tables) if tables else pa.table({})


def read_stage(work: str, stage: str) -> pa.Table | None:
    """The latest complete manifest of ``stage``, or None if it never ran."""
    latest = latest_run(work, stage)
    return read_table(latest[1]) if latest else None


def read_lines(pattern: str, delete: bool = False) -> list[str]:
    """The non-empty lines of every file matching ``pattern`` (e.g. Beam text shards)."""
    lines = []
    for path in workdir.match(pattern):
        with FileSystems.open(path) as handle:
            lines += [line for line in handle.read().decode().splitlines() if line]
        if delete:
            FileSystems.delete([path])
    return lines


def write_bytes(path: str, data: bytes) -> None:
    """Writes (replaces) one file, local or ``gs://``, atomically."""
    workdir.write_atomic(path, data)


def write_report(work: str, stage: str, report: dict, markdown: str) -> tuple[str, str]:
    """``W/<stage>/report.json`` and ``report.md``; returns their paths."""
    json_path = FileSystems.join(stage_dir(work, stage), "report.json")
    markdown_path = FileSystems.join(stage_dir(work, stage), "report.md")
    write_bytes(json_path, json.dumps(report, indent=1, default=str).encode())
    write_bytes(markdown_path, markdown.encode())
    return json_path, markdown_path


def print_locations(report: dict) -> int:
    """Prints where a stage wrote its manifest and report; exit code 1 if counts don't reconcile."""
    print(f"  manifest: {', '.join(report['manifest'])}")
    print(f"  report:   {', '.join(report['report_files'])}")
    if not report["reconciled"]:
        print("error: counts do not reconcile (inputs != kept + dropped)", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------ checkpoints of a running stage
#
# A run's manifest appears only when the run ends. So that a killed run (SIGKILL, Ctrl-C,
# a lost machine) does not lose its work, a stage also writes what it has finished as
# small Parquet parts, ``W/<stage>/checkpoint/part-<uuid>.parquet`` (each written
# atomically: whole or absent). The next run reads them like the previous manifest and
# reuses their rows; a run that completes deletes them after its manifest is in place.


def checkpoint_dir(work: str, stage: str) -> str:
    return FileSystems.join(stage_dir(work, stage), "checkpoint")


def write_checkpoint(work: str, stage: str, rows: list[dict], schema: pa.Schema) -> str:
    """Writes ``rows`` as one new checkpoint part; returns its path."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    path = FileSystems.join(checkpoint_dir(work, stage), f"part-{uuid.uuid4().hex}.parquet")
    try:
        workdir.write_atomic(path, buffer.getvalue())
    except Exception as error:
        raise workdir.unwritable(path, error) from error
    return path


def checkpoint_paths(work: str, stage: str) -> list[str]:
    """The checkpoint parts left by runs that did not finish (none: an empty list)."""
    return workdir.match(FileSystems.join(checkpoint_dir(work, stage), "part-*.parquet"))


def clear_checkpoint(work: str, stage: str) -> int:
    """Deletes the checkpoint parts (and temporary files of parts cut short); how many."""
    folder = checkpoint_dir(work, stage)
    paths = workdir.match(FileSystems.join(folder, "part-*.parquet"))
    paths += workdir.match(FileSystems.join(folder, ".part-*"))
    if paths:
        FileSystems.delete(paths)
    return len(paths)

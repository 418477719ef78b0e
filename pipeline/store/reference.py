"""``W/reference/``: every labeled image of a CamSDD root, hashed once.

One row per labeled file, keyed like the TFDS example ids (``train/10_Waterfall/1.jpg``):
its path and size, the sha256 of its bytes, and the pHashes dedup and the build's leak
check compare (576×384, frame, mirrored). ``camsdd embed``, ``dedup`` and
``pseudolabel`` and ``tfds build`` read it instead of reading and decoding the labeled
images again. A file is hashed again only when it is new or its size changed.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.core import dedup, images
from pipeline.core.schema import DROPPED, KEPT
from pipeline.store import camsdd_layout, manifest, workdir

STAGE = "reference"
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),  # why a file is no usable image (kept: None)
        ("split", pa.string()),
        ("class_folder", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("sha256", pa.string()),
        ("phash", pa.uint64()),
        ("phash_frame", pa.uint64()),
        ("phash_mirror", pa.uint64()),
    ]
)


def labeled_files(root: str) -> list[tuple[camsdd_layout.LabeledFile, int]]:
    """Every labeled image under CAMSDD_ROOT with its size, in one listing per class folder."""
    root = workdir.absolute(root)  # rows name files by absolute path: any cwd reads them
    scan = camsdd_layout.scan_camsdd(camsdd_layout.find_camsdd_root(root))
    files = [f for split in scan.splits.values() for f in split.files]
    folders = sorted({f.path.rsplit("/", 1)[0] for f in files})
    sizes = {}
    for result in FileSystems.match([FileSystems.join(folder, "*") for folder in folders]):
        sizes.update({m.path: m.size_in_bytes for m in result.metadata_list})
    return [(f, sizes.get(f.path, -1)) for f in files]


def hash_file(f: camsdd_layout.LabeledFile, size: int) -> dict[str, Any]:
    """The reference row of one labeled file; an unusable file is a dropped row."""
    row = {
        "key": f.key,
        "split": f.split,
        "class_folder": f.class_folder,
        "path": f.path,
        "size": size,
    }
    try:
        record = dedup.reference_record(f.split, f.key, workdir.read_bytes(f.path))
    except images.InvalidImageError as error:
        return {**row, "status": DROPPED, "reason": error.reason}
    except OSError:
        return {**row, "status": DROPPED, "reason": "unreadable"}
    hashes = {k: record[k] for k in ("sha256", "phash", "phash_frame", "phash_mirror")}
    return {**row, **hashes, "status": KEPT, "reason": None}


def read(work: str) -> list[dict[str, Any]]:
    """The rows of the newest complete reference run ([] when there is none)."""
    latest = manifest.latest_run(work, STAGE)
    return manifest.read_table(latest[1]).to_pylist() if latest else []


def to_hash(
    rows: Iterable[dict[str, Any]], files: list[tuple[camsdd_layout.LabeledFile, int]]
) -> tuple[list[dict[str, Any]], list[tuple[camsdd_layout.LabeledFile, int]]]:
    """(rows still valid for ``files``, files to hash): new, moved or resized files."""
    known = {row["key"]: row for row in rows}
    fresh, stale = [], []
    for f, size in files:
        row = known.get(f.key)
        if row is not None and row["path"] == f.path and row["size"] == size:
            fresh.append(row)
        else:
            stale.append((f, size))
    return fresh, stale


def write(work: str, rows: list[dict[str, Any]]) -> str:
    """A new complete reference run (the previous one is removed); returns its path."""
    run_id = manifest.new_run_id()
    path = FileSystems.join(
        manifest.stage_dir(work, STAGE), f"manifest-{run_id}-00000-of-00001.parquet"
    )
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in SCHEMA.names} for row in sorted(rows, key=_key)],
        schema=SCHEMA,
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    workdir.write_atomic(path, buffer.getvalue())
    manifest.delete_other_runs(work, STAGE, run_id)
    return path


def _key(row: dict[str, Any]) -> str:
    return row["key"]


def matches(rows: list[dict[str, Any]], files: list[camsdd_layout.LabeledFile]) -> bool:
    """Whether ``rows`` describe exactly these files (same keys at the same paths)."""
    return {(r["key"], r["path"]) for r in rows} == {(f.key, f.path) for f in files}

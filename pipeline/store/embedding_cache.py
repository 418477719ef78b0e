"""The teacher-embedding cache: ``W/embed/<model id>/vectors-<run>-SSSSS-of-NNNNN.parquet``.

One row per image *content* (``sha256`` of the stored 576×384 JPEG for a candidate,
of the file for a labeled image) and its ``vector``. Append-only: each run embeds only
images not yet cached, so reruns, threshold changes and later stages (dedup,
pseudolabel, review) never recompute an embedding. A model id names the backbone and
input size, so vectors of two teachers never mix. A running embed checkpoints what
it computes (``checkpoint_stage``), so a killed run loses at most a few seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipeline.store import manifest, workdir

STAGE = "embed"
SCHEMA = pa.schema([("sha256", pa.string()), ("vector", pa.list_(pa.float32()))])


class Teacher(Protocol):
    model_id: str


def model_id_of(model: str | Teacher) -> str:
    """A model id, given one or anything that has it (a ``TeacherSpec``)."""
    return model if isinstance(model, str) else model.model_id


def model_dir(work: str, model: str | Teacher) -> str:
    return FileSystems.join(work, STAGE, model_id_of(model))


def cached_paths(work: str, model: str | Teacher) -> list[str]:
    return workdir.match(FileSystems.join(model_dir(work, model), "vectors-*.parquet"))


def checkpoint_stage(model: str | Teacher) -> str:
    """The ``stage`` under which a running embed checkpoints the vectors it has computed
    (``manifest.write_checkpoint``): ``W/embed/<model id>/checkpoint/part-*.parquet``.

    A killed run's parts are not in the cache yet; the next run moves their vectors
    into it (each once) instead of computing them again.
    """
    return f"{STAGE}/{model_id_of(model)}"


def read_cache(paths: Sequence[str], columns: list[str] | None = None) -> pa.Table:
    tables = [manifest.read_parquet(path, columns) for path in paths]
    if not tables:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    return pa.concat_tables(tables)


def load_vectors(work: str, model: str | Teacher) -> dict[str, np.ndarray]:
    """sha256 → embedding, for every cached image (small and medium runs; Beam joins at scale)."""
    table = read_cache(cached_paths(work, model))
    vectors = table.column("vector").to_pylist()
    return {
        sha: np.asarray(v, np.float32)
        for sha, v in zip(table.column("sha256").to_pylist(), vectors, strict=True)
    }


def vectors_for(work: str, model: str | Teacher, shas: Sequence[str]) -> dict[str, np.ndarray]:
    """sha256 → cached embedding for the given images only (missing ones are absent)."""
    wanted = sorted(set(shas))
    found: dict[str, np.ndarray] = {}
    for path in cached_paths(work, model):
        table = manifest.read_parquet(path, filters=[("sha256", "in", wanted)])
        for sha, vector in zip(
            table.column("sha256").to_pylist(), table.column("vector").to_pylist(), strict=True
        ):
            found[sha] = np.asarray(vector, np.float32)
    return found

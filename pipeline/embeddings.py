"""Teacher embeddings: the Beam model handler, the on-disk cache, and LSH buckets.

The cache lives in ``W/embed/<model id>/vectors-<run>-SSSSS-of-NNNNN.parquet``
with one row per image *content* (``sha256`` of the stored 576×384 JPEG for a
candidate, of the file for a labeled image) and its ``vector``. It is append-only:
each run embeds only images not yet cached, so reruns, threshold changes and later
stages (dedup, pseudolabel) never recompute an embedding.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from PIL import Image

from pipeline import dedup, images, manifest, teacher, workdir

STAGE = "embed"
SCHEMA = pa.schema([("sha256", pa.string()), ("vector", pa.list_(pa.float32()))])
#: Random-hyperplane LSH for cosine near-duplicates among candidates: BANDS bands of
#: BITS bits; two images sharing any band are compared exactly. See README (dedup).
LSH_BANDS, LSH_BITS, LSH_SEED = 24, 14, 20261124


def model_dir(work: str, spec: teacher.TeacherSpec) -> str:
    return FileSystems.join(manifest.stage_dir(work, STAGE), spec.model_id)


def cached_paths(work: str, spec: teacher.TeacherSpec) -> list[str]:
    pattern = FileSystems.join(model_dir(work, spec), "vectors-*.parquet")
    return workdir.match(pattern)


def read_cache(paths: Sequence[str], columns: list[str] | None = None) -> pa.Table:
    tables = []
    for path in paths:
        with FileSystems.open(path) as handle:
            tables.append(pq.read_table(io.BytesIO(handle.read()), columns=columns))
    if not tables:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    return pa.concat_tables(tables)


def load_vectors(work: str, spec: teacher.TeacherSpec) -> dict[str, np.ndarray]:
    """sha256 → embedding, for every cached image (small and medium runs; Beam joins at scale)."""
    table = read_cache(cached_paths(work, spec))
    vectors = table.column("vector").to_pylist()
    return {
        sha: np.asarray(v, np.float32)
        for sha, v in zip(table.column("sha256").to_pylist(), vectors, strict=True)
    }


def decode_stored(data: bytes) -> np.ndarray:
    """Stored JPEG bytes → uint8 (384, 576, 3), fitting anything else to 576×384."""
    image = images.to_rgb(images.open_image(data))
    if image.size != images.TARGET_SIZE:
        image = images.fit_to_size(image)
    return np.asarray(image, np.uint8)


class TeacherModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """RunInference handler: uint8 576×384 arrays in, embeddings out, in batches."""

    def __init__(self, spec: teacher.TeacherSpec, max_batch_size: int = 32):
        self.spec = spec
        self.max_batch_size = max_batch_size

    def load_model(self):
        return teacher.build_teacher(self.spec)

    def run_inference(self, batch, model, inference_args=None) -> Iterable[PredictionResult]:
        vectors = np.asarray(model(np.stack(batch), training=False))
        return [PredictionResult(x, v) for x, v in zip(batch, vectors, strict=True)]

    def get_num_bytes(self, batch) -> int:
        return sum(x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return "camsdd.embed"

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.max_batch_size}


# ------------------------------------------------------------------ LSH for dedup


def _hyperplanes(dim: int) -> np.ndarray:
    rng = np.random.default_rng(LSH_SEED)
    return rng.standard_normal((dim, LSH_BANDS * LSH_BITS)).astype(np.float32)


def lsh_signatures(vectors: np.ndarray) -> np.ndarray:
    """(n, LSH_BANDS) band codes: the signs of random projections, LSH_BITS per band."""
    vectors = np.asarray(vectors, np.float32)
    bits = (vectors @ _hyperplanes(vectors.shape[1])) > 0
    weights = 1 << np.arange(LSH_BITS, dtype=np.int64)
    return (bits.reshape(len(vectors), LSH_BANDS, LSH_BITS) * weights).sum(-1)


def lsh_buckets(row: dict[str, Any]) -> Iterable[tuple[tuple[str, int, int], tuple]]:
    """(("emb", band, code), (key, vector)) for a candidate that has an embedding."""
    vector = row.get("embedding")
    if vector is None:
        return
    vector = np.asarray(vector, np.float32)
    for band, code in enumerate(lsh_signatures(vector[None])[0]):
        yield ("emb", band, int(code)), (row["key"], vector)


def verify_bucket(element, min_cosine: float) -> Iterable[tuple[tuple[str, str], float]]:
    """((key, key), 1 − cosine) of every pair in one LSH bucket at or above ``min_cosine``."""
    _, entries = element
    entries = sorted(entries, key=lambda e: e[0])
    if len(entries) < 2:
        return
    keys = [e[0] for e in entries]
    unit = dedup.normalize_rows(np.stack([e[1] for e in entries]))
    sim = unit @ unit.T
    left, right = np.nonzero(np.triu(sim >= min_cosine, 1))
    for i, j in zip(left, right, strict=True):
        if keys[i] != keys[j]:
            yield (keys[i], keys[j]), round(float(1 - sim[i, j]), 4)


def _decode_path(path: str) -> np.ndarray:
    with FileSystems.open(path) as handle:
        return decode_stored(handle.read())


def to_array(item: tuple[str, str]) -> tuple[str, np.ndarray] | None:
    """(sha256, path) → (sha256, pixels); an unreadable image yields nothing."""
    sha, path = item
    try:
        return sha, _decode_path(path)
    except (images.InvalidImageError, OSError, Image.DecompressionBombError):
        return None


def attach_vectors(rows, vectors, label: str):
    """Rows with ``embedding``: the cached vector of their ``sha256`` (None if not cached)."""

    def attach(element):
        _, grouped = element
        vector = grouped["vector"][0] if grouped["vector"] else None
        for row in grouped["row"]:
            yield {**row, "embedding": vector}

    return (
        {"row": rows | f"{label}BySha" >> beam.Map(lambda r: (r["sha256"], r)), "vector": vectors}
        | f"{label}JoinVectors" >> beam.CoGroupByKey()
        | f"{label}AttachVectors" >> beam.FlatMap(attach)
    )


def vectors_for(work: str, spec: teacher.TeacherSpec, shas: Sequence[str]) -> dict[str, np.ndarray]:
    """sha256 → cached embedding for the given images only (missing ones are absent)."""
    wanted = sorted(set(shas))
    found: dict[str, np.ndarray] = {}
    for path in cached_paths(work, spec):
        with FileSystems.open(path) as handle:
            table = pq.read_table(io.BytesIO(handle.read()), filters=[("sha256", "in", wanted)])
        for sha, vector in zip(
            table.column("sha256").to_pylist(), table.column("vector").to_pylist(), strict=True
        ):
            found[sha] = np.asarray(vector, np.float32)
    return found

"""Joining cached teacher embeddings onto manifest rows, in Beam (dedup and pseudolabel)."""

from __future__ import annotations

import apache_beam as beam


def read_vectors(pipeline: beam.Pipeline, paths: list[str], label: str = "Vectors"):
    """(sha256, vector) of the embedding-cache shards ``paths``."""
    return (
        pipeline
        | f"{label}Shards" >> beam.Create(paths)
        | f"Read{label}" >> beam.io.ReadAllFromParquet()
        | f"Key{label}" >> beam.Map(lambda r: (r["sha256"], r["vector"]))
    )


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

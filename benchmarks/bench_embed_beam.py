"""Teacher embedding throughput: Beam RunInference vs calling the model directly, one run.

    .venv/bin/python benchmarks/bench_embed_beam.py [--images 384] [--batch-size 32]

Both paths read the same demo JPEGs (the 67 labeled photos, repeated), decode
them with ``image_store.read_pixels`` and run the same teacher on batches of the
same size; both include building the model. The Beam path is the one ``camsdd
embed`` uses (Create → Decode → RunInference(KeyedModelHandler(TeacherModelHandler)))
on the local runner. Target: Beam within 20% of direct.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipeline.demo_data import CAMSDD_ROOT  # noqa: E402
from pipeline.models import teacher  # noqa: E402
from pipeline.stages import embed  # noqa: E402
from pipeline.stages import options as beam_options  # noqa: E402
from pipeline.store import image_store  # noqa: E402


def to_array(item):
    sha, path = item
    return sha, image_store.read_pixels(path)


def direct(items, batch_size: int) -> int:
    model = teacher.build_teacher(teacher.DEFAULT_TEACHER)
    done = 0
    for i in range(0, len(items), batch_size):
        arrays = [to_array(item)[1] for item in items[i : i + batch_size]]
        done += len(np.asarray(model(np.stack(arrays), training=False)))
    return done


def through_beam(items, batch_size: int) -> int:
    handler = embed.TeacherModelHandler(teacher.DEFAULT_TEACHER, batch_size)
    options = PipelineOptions(beam_options.with_local_runner([]))
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | beam.Create(items)
            | "Decode" >> beam.Map(to_array)
            | RunInference(KeyedModelHandler(handler))
            | beam.Map(lambda kv: beam.metrics.Metrics.counter("bench", "embedded").inc())
        )
    return beam_options.counters(pipeline.result, "bench")["embedded"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    photos = sorted(str(p) for p in Path(CAMSDD_ROOT).rglob("*.jpg"))
    items = [(f"{i:06d}", photos[i % len(photos)]) for i in range(args.images)]
    results = {}
    for name, run in (("direct", direct), ("beam", through_beam), ("direct again", direct)):
        started = time.perf_counter()
        count = run(items, args.batch_size)
        seconds = time.perf_counter() - started
        results[name] = seconds
        print(f"{name:<13} {count} images in {seconds:.2f} s ({count / seconds:.1f} images/s)")
    baseline = min(results["direct"], results["direct again"])
    print(
        f"beam / direct wall time: {results['beam'] / baseline:.3f} "
        f"(target <= 1.20; direct = the faster of its two runs)"
    )


if __name__ == "__main__":
    main()

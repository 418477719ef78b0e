"""Teacher embedding throughput: today's Keras path, the LiteRT path direct and in Beam, one run.

    .venv/bin/python benchmarks/bench_embed_beam.py [--images 512] [--repeats 3]

Every path reads the same demo JPEGs (the 67 labeled photos, repeated) and decodes
them with ``image_store.read_pixels`` (what ``camsdd embed`` does), except the limit:

* **Keras eager** (the embed stage before LiteRT): ``model(batch)`` on batches of 32;
* **tf.function**: the same Keras teacher compiled (``jit_compile=False``), batches of 32;
* **LiteRT direct**: the converted teacher (``teacher_runtime``), decode + batches of 32;
* **LiteRT in Beam**: ``camsdd embed``'s own path: Create → Decode →
  RunInference(KeyedModelHandler(TeacherModelHandler)) on the local runner, the
  pipeline's whole wall time (start-up, model load and all);
* **LiteRT limit**: the runtime's own ceiling, the interpreter invoked in a tight loop
  on preloaded frames, same threads.

Model building, conversion and warm-up are outside the timed sections (the converted
file is cached, as in ``camsdd embed``). Each path runs ``--repeats`` times,
interleaved; the medians are reported. Goal: Beam ≥ 4× Keras eager and ≥ 80% of the
limit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipeline.demo_data import CAMSDD_ROOT  # noqa: E402
from pipeline.models import teacher, teacher_runtime  # noqa: E402
from pipeline.stages import embed  # noqa: E402
from pipeline.stages import options as beam_options  # noqa: E402
from pipeline.store import image_store  # noqa: E402

BATCH = 32


def to_array(item):
    sha, path = item
    return sha, image_store.read_pixels(path)


def batched(items, model) -> int:
    done = 0
    for i in range(0, len(items), BATCH):
        arrays = [to_array(item)[1] for item in items[i : i + BATCH]]
        done += len(model(np.stack(arrays)))
    return done


def through_beam(items, handler) -> int:
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


def tight_loop(frames, model) -> int:
    runner, index = model.runner, model.input
    for frame in frames:
        runner.set_tensor(index, frame[None])
        runner.invoke()
    return len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="LiteRT threads (all cores)")
    args = parser.parse_args()
    import tensorflow as tf

    photos = sorted(str(p) for p in Path(CAMSDD_ROOT).rglob("*.jpg"))
    items = [(f"{i:06d}", photos[i % len(photos)]) for i in range(args.images)]
    spec = teacher.DEFAULT_TEACHER
    threads = args.threads or teacher_runtime.threads_for()

    started = time.perf_counter()
    keras_teacher = teacher_runtime.KerasTeacher(spec)
    keras_build = time.perf_counter() - started
    compiled = tf.function(lambda x: keras_teacher.model(x, training=False))

    def tf_function(frames):
        return np.asarray(compiled(tf.constant(frames)))

    work = tempfile.mkdtemp(prefix="bench_embed_")
    started = time.perf_counter()
    path = teacher_runtime.ensure_tflite(work, spec)
    convert = time.perf_counter() - started
    started = time.perf_counter()
    litert = teacher_runtime.load(spec, path, threads)
    load = time.perf_counter() - started
    handler = embed.TeacherModelHandler(spec, BATCH, path, threads)
    frames = [to_array(item)[1] for item in items]
    print(
        f"{args.images} images, batches of {BATCH}, LiteRT threads {threads}; Keras build "
        f"{keras_build:.1f} s, TFLite file {convert:.1f} s (cached after the first run), "
        f"LiteRT load {load:.2f} s"
    )
    paths = {
        "Keras eager (today)": lambda: batched(items, keras_teacher),
        "Keras tf.function": lambda: batched(items, tf_function),
        "LiteRT direct": lambda: batched(items, litert),
        "LiteRT in Beam": lambda: through_beam(items, handler),
        "LiteRT limit (preloaded)": lambda: tight_loop(frames, litert),
    }
    # Warm-up: the first calls trace, compile and allocate.
    keras_teacher(np.stack(frames[:BATCH]))
    tf_function(np.stack(frames[:BATCH]))
    litert(np.stack(frames[:BATCH]))
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for repeat in range(args.repeats):
        for name, run in paths.items():
            started = time.perf_counter()
            count = run()
            seconds = time.perf_counter() - started
            assert count == args.images, (name, count)
            rates[name].append(count / seconds)
            print(f"  repeat {repeat + 1}: {name:<26} {count / seconds:7.1f} images/s", flush=True)
    median = {name: statistics.median(values) for name, values in rates.items()}
    print("\n| path | images/s (median) | runs |\n| --- | ---: | --- |")
    for name, values in rates.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {median[name]:.1f} | {shown} |")
    beam_rate, limit = median["LiteRT in Beam"], median["LiteRT limit (preloaded)"]
    print(
        f"\nBeam / Keras eager: {beam_rate / median['Keras eager (today)']:.2f}x (goal >= 4)\n"
        f"Beam / LiteRT limit: {beam_rate / limit:.0%} (goal >= 80%)\n"
        f"direct / LiteRT limit: {median['LiteRT direct'] / limit:.0%}\n"
        f"LiteRT direct / tf.function: {median['LiteRT direct'] / median['Keras tf.function']:.2f}x"
    )


if __name__ == "__main__":
    main()

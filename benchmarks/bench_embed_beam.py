"""Teacher embedding throughput: today's Keras path, the LiteRT path direct and in Beam, one run.

    .venv/bin/python benchmarks/bench_embed_beam.py [--images 1536] [--keras-images 384]
                                                    [--repeats 3] [--beam-batch 32] [--lanes N]

Every path reads the same demo JPEGs (the 67 labeled photos, repeated) and decodes
them with ``image_store.read_pixels`` (what ``camsdd embed`` does), except the limits.
The two Keras paths run on the first ``--keras-images`` of them (their rate is the
same per batch after warm-up, and at 19 images/s the whole list would take minutes);
the LiteRT paths on all ``--images``, enough that Beam's fixed start-up (about a
second, printed) weighs on its rate about as little as in a real run's thousands:

* **Keras eager** (the embed stage before LiteRT): decode, then ``model(batch)`` on
  batches of 32;
* **tf.function**: the same Keras teacher compiled (``jit_compile=False``), batches of 32;
* **LiteRT direct**: the converted teacher (``teacher_runtime``), ``embed`` on batches
  of 32 paths (read and decoded inside its lanes, one single-threaded interpreter per
  core);
* **LiteRT in Beam**: ``camsdd embed``'s own path: Create(sha, path) →
  RunInference(KeyedModelHandler(TeacherModelHandler)) on the local runner, the
  pipeline's whole wall time (start-up, model load and all);
* **LiteRT limit**: the runtime's own ceiling on the same file and cores, the better
  of two ways of invoking it in tight loops on preloaded frames: one interpreter on
  all threads, and one single-threaded interpreter per core, each in its own thread.

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
LIMIT_LANES = "LiteRT limit: lanes x 1 thread"
LIMIT_ONE = "LiteRT limit: 1 x all threads"
KERAS_EAGER = "Keras eager (today)"
KERAS_FUNCTION = "Keras tf.function"
#: The paths timed on ``--keras-images`` only.
KERAS_PATHS = (KERAS_EAGER, KERAS_FUNCTION)


def to_array(item):
    sha, path = item
    return sha, image_store.read_pixels(path)


def batched(items, model) -> int:
    done = 0
    for i in range(0, len(items), BATCH):
        arrays = [to_array(item)[1] for item in items[i : i + BATCH]]
        done += len(model(np.stack(arrays)))
    return done


def embedded(items, model) -> int:
    done = 0
    for i in range(0, len(items), BATCH):
        paths = [path for _, path in items[i : i + BATCH]]
        done += sum(v is not None for v in model.embed(paths, image_store.read_pixels))
    return done


def through_beam(items, handler) -> int:
    options = PipelineOptions(beam_options.with_local_runner([]))
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | beam.Create(items)
            | RunInference(KeyedModelHandler(handler))
            | beam.Map(lambda kv: beam.metrics.Metrics.counter("bench", "embedded").inc())
        )
    return beam_options.counters(pipeline.result, "bench")["embedded"]


def tight_loop(frames, model) -> int:
    """Every lane of ``model`` invoked back to back on preloaded frames (no decode)."""
    return sum(v is not None for v in model.embed(frames, lambda frame: frame))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1536)
    parser.add_argument("--keras-images", type=int, default=384, help="images the Keras paths time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="LiteRT threads (all cores)")
    parser.add_argument("--lanes", type=int, default=None, help="LiteRT lanes (default: threads)")
    parser.add_argument(
        "--beam-batch", type=int, default=embed.DEFAULT_BATCH, help="RunInference max batch"
    )
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
    litert = teacher_runtime.load(spec, path, threads, args.lanes)
    load = time.perf_counter() - started
    one_interpreter = teacher_runtime.load(spec, path, threads, lanes=1)
    handler = embed.TeacherModelHandler(spec, args.beam_batch, path, threads, lanes=args.lanes)
    frames = [to_array(item)[1] for item in items]
    keras_items = items[: args.keras_images]
    started = time.perf_counter()
    through_beam(items[:BATCH], handler)
    beam_fixed = time.perf_counter() - started
    print(
        f"{args.images} images ({len(keras_items)} for the Keras paths), batches of {BATCH} "
        f"(Beam: up to {args.beam_batch}), LiteRT threads {threads} ({litert.lanes} lanes); "
        f"Keras build {keras_build:.1f} s, TFLite file {convert:.1f} s (cached after the first "
        f"run), LiteRT load {load:.2f} s, a {BATCH}-image Beam run {beam_fixed:.2f} s "
        "(about its fixed start-up)"
    )
    paths = {
        KERAS_EAGER: lambda: batched(keras_items, keras_teacher),
        KERAS_FUNCTION: lambda: batched(keras_items, tf_function),
        "LiteRT direct": lambda: embedded(items, litert),
        "LiteRT in Beam": lambda: through_beam(items, handler),
        LIMIT_LANES: lambda: tight_loop(frames, litert),
        LIMIT_ONE: lambda: tight_loop(frames, one_interpreter),
    }
    # Warm-up: the first calls trace, compile and allocate. One call was not enough for
    # eager Keras: its first timed pass once ran at 6 images/s, the next at 21.
    batched(keras_items[: 3 * BATCH], keras_teacher)
    batched(keras_items[: 3 * BATCH], tf_function)
    litert(np.stack(frames[:BATCH]))
    one_interpreter(np.stack(frames[:BATCH]))
    rates: dict[str, list[float]] = {name: [] for name in paths}
    # CPU time of the whole process (every thread) per image: the work each path does,
    # which other programs on a shared machine disturb far less than the wall time.
    cpu_ms: dict[str, list[float]] = {name: [] for name in paths}
    for repeat in range(args.repeats):
        for name, run in paths.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            count = run()
            seconds = time.perf_counter() - started
            cpu_ms[name].append((time.process_time() - cpu_started) / count * 1000)
            assert count == (len(keras_items) if name in KERAS_PATHS else len(items)), name
            rates[name].append(count / seconds)
            print(
                f"  repeat {repeat + 1}: {name:<32} {count / seconds:7.1f} images/s "
                f"{cpu_ms[name][-1]:6.1f} CPU ms/image",
                flush=True,
            )
    median = {name: statistics.median(values) for name, values in rates.items()}
    print("\n| path | images/s (median) | runs | CPU ms / image |\n| --- | ---: | --- | ---: |")
    for name, values in rates.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {median[name]:.1f} | {shown} | {statistics.median(cpu_ms[name]):.1f} |")
    beam_rate = median["LiteRT in Beam"]
    limit = max(median[LIMIT_LANES], median[LIMIT_ONE])
    print(
        f"\nLiteRT limit: {limit:.1f} images/s (the better of the two tight loops)\n"
        f"Beam / Keras eager: {beam_rate / median[KERAS_EAGER]:.2f}x (goal >= 4)\n"
        f"Beam / LiteRT limit: {beam_rate / limit:.0%} (goal >= 80%)\n"
        f"direct / LiteRT limit: {median['LiteRT direct'] / limit:.0%}\n"
        f"LiteRT direct / tf.function: {median['LiteRT direct'] / median[KERAS_FUNCTION]:.2f}x"
    )


if __name__ == "__main__":
    main()

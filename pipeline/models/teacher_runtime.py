"""The teacher at inference: LiteRT (XNNPACK) on a TFLite file converted once, or Keras.

``camsdd embed`` spends most of a run's compute in the teacher, so it runs the
built-in backbones (the offline EfficientNet-Lite0, ``keras.applications`` names)
through LiteRT: ``teacher.build_export_teacher`` (the same function as
``build_teacher``, its antialiased resize rewritten as two strided convolutions) is
converted to float32 TFLite once per work dir and model id, cached at
``W/embed/<model id>/teacher-litert-v1.tflite`` (and in the user's cache folder, so
a new work dir does not convert again), and each Beam worker loads it once, as one
single-threaded interpreter per core ("lanes") that read, decode and embed images
side by side.

Measured on the 2-core machine (``benchmarks/bench_embed_beam.py``): LiteRT runs
the teacher 2.4 to 3× as fast as a compiled ``tf.function`` and 3.2 to 4× as fast
as Keras called eagerly, and
its vectors match the Keras teacher's to cosine 0.9999999 on the demo photos, so the
model id (the cache key) is unchanged: old and new vectors are the same vectors.

A ``.keras`` teacher keeps the Keras path (its layers may not convert).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pipeline.core import quiet
from pipeline.models import teacher, tflite_model
from pipeline.store import embedding_cache, workdir

LITERT = "litert"
KERAS = "keras"
#: Bump when the exported graph changes, so a stale converted file is never reused.
FILE_NAME = "teacher-litert-v1.tflite"
#: Vectors this close (cosine, every image) to the Keras teacher's are the same vectors
#: and may share its cache; a runtime that falls below must get its own model id.
SAME_VECTORS_COSINE = 0.99999


#: Backbones whose converted vectors a test holds to the Keras teacher's (cosine at least
#: SAME_VECTORS_COSINE); the others (``.keras`` files, mobilenet_v2, efficientnet_lite2,
#: keras.applications) run in Keras until theirs is too.
LITERT_BACKBONES = ("efficientnet_lite0",)


def runtime_of(spec: teacher.TeacherSpec) -> str:
    """``litert`` for the backbones in LITERT_BACKBONES, else ``keras``."""
    return LITERT if spec.name in LITERT_BACKBONES else KERAS


def convert(spec: teacher.TeacherSpec) -> bytes:
    """The float32 TFLite file of ``build_export_teacher(spec)``: uint8 (N, 384, 576, 3) in."""
    import tensorflow as tf

    from pipeline.core import images

    model = teacher.build_export_teacher(spec)
    signature = tf.TensorSpec((None, images.TARGET_HEIGHT, images.TARGET_WIDTH, 3), tf.uint8)
    function = tf.function(lambda x: model(x, training=False), input_signature=[signature])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], model
    )
    with quiet.native_output_captured():  # the converter's C++ chatter, shown on failure
        return converter.convert()


def user_cache_path(spec: teacher.TeacherSpec) -> str:
    """Where converted files are kept across work dirs (``$XDG_CACHE_HOME/camsdd``).

    Named by the model id and a digest of the code that builds and converts it and
    of TensorFlow's version, so a changed exporter never reuses an old file.
    """
    import tensorflow as tf

    digest = hashlib.sha256(tf.__version__.encode())
    for module in (teacher, sys.modules[__name__]):
        digest.update(inspect.getsource(module).encode())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = f"{FILE_NAME.removesuffix('.tflite')}-{digest.hexdigest()[:12]}.tflite"
    return os.path.join(base, "camsdd", "teachers", spec.model_id, name)


def ensure_tflite(work: str, spec: teacher.TeacherSpec) -> str:
    """The converted teacher in ``W/embed/<model id>/``, converting it only if no copy exists.

    Returns its path (local or ``gs://``), which Beam workers read in ``load_model``.
    """
    path = workdir.join(embedding_cache.model_dir(work, spec), FILE_NAME)
    if workdir.exists(path):
        return path
    local = user_cache_path(spec)
    if os.path.exists(local):
        with open(local, "rb") as handle:
            content = handle.read()
    else:
        content = convert(spec)
        with contextlib.suppress(OSError):  # a read-only home: the work dir's copy will do
            workdir.write_atomic(local, content)
    workdir.write_atomic(path, content)
    return path


class LiteRTTeacher:
    """A converted teacher on LiteRT: uint8 frames (N, 384, 576, 3) → float32 (N, D).

    ``lanes`` interpreters (default: one per thread, each single-threaded) work on a
    batch's images at once, each lane in its own thread (LiteRT releases the GIL
    while it runs), each taking the next image: no lane waits on another's ops.
    ``embed`` also reads and decodes inside the lanes, so decoding one image
    overlaps the inference of another.
    Calls are serialized (Beam may share one model between a process's threads).
    """

    def __init__(self, content: bytes, threads: int, lanes: int | None = None):
        self.threads = threads
        self.lanes = max(1, min(lanes or threads, threads))
        per_lane = max(1, threads // self.lanes)
        self.runners = [tflite_model.interpreter(content, per_lane) for _ in range(self.lanes)]
        self.input = self.runners[0].get_input_details()[0]["index"]
        self.output = self.runners[0].get_output_details()[0]["index"]
        self.width = int(self.runners[0].get_output_details()[0]["shape"][-1])
        self.pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="litert-lane")
        self.lock = threading.Lock()

    def _invoke(self, runner: Any, frame: np.ndarray) -> np.ndarray:
        runner.set_tensor(self.input, np.asarray(frame, np.uint8)[None])
        runner.invoke()
        return runner.get_tensor(self.output)[0].copy()

    def embed(self, items: Sequence[Any], load: Callable[[Any], np.ndarray | None]) -> list:
        """``load(item)`` then its vector, for every item, in order; None where load gave None.

        Each lane takes the next item not yet taken, so a slow image never idles the others.
        """
        results: list[np.ndarray | None] = [None] * len(items)
        taken = itertools.count()
        taking = threading.Lock()

        def lane(runner: Any) -> None:
            while True:
                with taking:
                    i = next(taken)
                if i >= len(items):
                    return
                frame = load(items[i])
                if frame is not None:
                    results[i] = self._invoke(runner, frame)

        with self.lock:
            for done in [self.pool.submit(lane, runner) for runner in self.runners]:
                done.result()
        return results

    def __call__(self, frames: Any) -> np.ndarray:
        vectors = self.embed(list(np.asarray(frames, np.uint8)), lambda frame: frame)
        return np.stack(vectors) if vectors else np.zeros((0, self.width), np.float32)


class KerasTeacher:
    """The Keras teacher called eagerly (``.keras`` teachers; the reference path)."""

    threads = None

    def __init__(self, spec: teacher.TeacherSpec):
        self.model = teacher.build_teacher(spec)

    def __call__(self, frames: Any) -> np.ndarray:
        return np.asarray(self.model(np.asarray(frames), training=False))

    def embed(self, items: Sequence[Any], load: Callable[[Any], np.ndarray | None]) -> list:
        """``LiteRTTeacher.embed``'s contract: loads every item, then one call on the readable."""
        frames = [load(item) for item in items]
        readable = [i for i, frame in enumerate(frames) if frame is not None]
        results: list[np.ndarray | None] = [None] * len(items)
        if readable:
            vectors = self(np.stack([frames[i] for i in readable]))
            for i, vector in zip(readable, vectors, strict=True):
                results[i] = vector
        return results


def threads_for(share: int = 1) -> int:
    """Threads for one model: this machine's usable cores split among ``share`` models."""
    return max(1, tflite_model.all_threads() // max(1, share))


def load(
    spec: teacher.TeacherSpec,
    tflite_path: str | None = None,
    threads: int | None = None,
    lanes: int | None = None,
) -> LiteRTTeacher | KerasTeacher:
    """The teacher as a callable: LiteRT when given its converted file, else Keras."""
    if tflite_path is None:
        return KerasTeacher(spec)
    return LiteRTTeacher(workdir.read_bytes(tflite_path), threads or threads_for(), lanes)

"""TFLite files for the student: convert (float, full INT8), check, run, time.

Full-integer post-training quantization follows the MAI 2021 rules: every op
INT8, uint8 input and output. The input is pinned to scale 1 / zero point 0, so
the file takes raw camera bytes: the Keras model sees 0..255 floats, and the
representative set gets one pixel at 0 and one at 255 so calibration measures
exactly that range (real photos nearly always have both anyway).

Runs use the LiteRT interpreter (``ai_edge_litert``), with its default XNNPACK
delegate as on a phone's CPU.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from pipeline.core import quiet
from pipeline.core.errors import UserError
from pipeline.models import student_data

# Tensor types an integer-only model may carry: int8 activations and weights,
# int32 biases and shapes, uint8 at the model's edges, int64/bool for shape ops.
INTEGER_TYPES = ("int8", "uint8", "int16", "int32", "int64", "bool")
# Ops that convert at the model's edges (uint8 <-> int8) are integer too.


class QuantizationError(UserError, RuntimeError):
    """The converted model is not integer-only (or not uint8 at its edges)."""


class ModelFileError(UserError, ValueError):
    """The bytes are not a TFLite model the interpreter can open."""


def convert_float(model: Any) -> bytes:
    """The FP32 TFLite file of a Keras model (the latency and accuracy reference)."""
    import tensorflow as tf

    with quiet.native_output_captured():  # the converter's C++ chatter, shown on failure
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def pinned_representatives(frames: Iterable[np.ndarray]) -> Callable[[], Iterator[list]]:
    """The converter's representative dataset: float32 (1, 384, 576, 3) frames 0..255.

    The first frame gets a 0 and a 255 pixel so the input's range is exactly 0..255.
    """
    stored = [np.asarray(frame, np.float32) for frame in frames]
    if not stored:
        raise QuantizationError("the representative dataset is empty")
    stored[0] = stored[0].copy()
    stored[0][0, 0, :] = 0.0
    stored[0][-1, -1, :] = 255.0

    def generate() -> Iterator[list]:
        for frame in stored:
            yield [frame[None]]

    return generate


def convert_int8(model: Any, representative: Iterable[np.ndarray]) -> tuple[bytes, dict]:
    """Full-integer INT8 TFLite with uint8 input and output, and its integer-only check.

    Raises ``QuantizationError`` if the file is not integer-only (see ``check_integer_only``).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = pinned_representatives(representative)
    # Builtins INT8 only: the converter itself refuses an op with no integer kernel.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with quiet.native_output_captured():
        content = converter.convert()
    return content, check_integer_only(content)


def interpreter(content: bytes, threads: int | None = None, delegates: bool = True):
    """A LiteRT interpreter, tensors allocated; ``delegates=False`` keeps the raw op list."""
    from ai_edge_litert import interpreter as litert

    kwargs: dict[str, Any] = {"model_content": content}
    if threads:
        kwargs["num_threads"] = threads
    if not delegates:
        kwargs["experimental_op_resolver_type"] = (
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    try:
        # Allocation applies the XNNPACK delegate, which prints "INFO: Created …" natively.
        with quiet.native_output_captured():
            runner = litert.Interpreter(**kwargs)
            runner.allocate_tensors()
    except ValueError as error:  # not a flatbuffer, truncated, wrong schema
        raise ModelFileError(f"not a TFLite model ({error})") from error
    return runner


def op_table(content: bytes, runner: Any = None) -> list[dict[str, Any]]:
    """Every op of the model: index, name and its tensors' dtypes (inputs, outputs).

    ``runner``: an interpreter of ``content`` built with ``delegates=False``, if at hand.
    """
    runner = runner or interpreter(content, delegates=False)
    tensors = {t["index"]: t for t in runner.get_tensor_details()}
    table = []
    for op in runner._get_ops_details():
        table.append(
            {
                "index": int(op["index"]),
                "op": op["op_name"],
                "inputs": [np.dtype(tensors[i]["dtype"]).name for i in op["inputs"] if i >= 0],
                "outputs": [np.dtype(tensors[i]["dtype"]).name for i in op["outputs"]],
            }
        )
    return table


def float_ops(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ops touching a non-integer tensor (float32, float16 …): float fallbacks."""
    return [op for op in table if any(t not in INTEGER_TYPES for t in op["inputs"] + op["outputs"])]


def check_integer_only(content: bytes) -> dict[str, Any]:
    """Proves the model integer-only with uint8 edges; raises naming the first bad op.

    Returns a summary: op counts by name and the input/output quantization.
    """
    runner = interpreter(content, delegates=False)
    table = op_table(content, runner)
    bad = float_ops(table)
    if bad:
        first = bad[0]
        listed = ", ".join(f"#{op['index']} {op['op']}" for op in bad[:5])
        raise QuantizationError(
            f"not integer-only: op #{first['index']} {first['op']} has "
            f"{first['inputs']} -> {first['outputs']} tensors ({len(bad)} float op(s): {listed})"
        )
    (inp,) = runner.get_input_details()
    (out,) = runner.get_output_details()
    for role, detail in (("input", inp), ("output", out)):
        if np.dtype(detail["dtype"]).name != "uint8":
            raise QuantizationError(
                f"the model's {role} is {np.dtype(detail['dtype']).name}, not uint8"
            )
    scale, zero_point = inp["quantization"]
    if not (abs(scale - 1.0) < 1e-6 and zero_point == 0):
        raise QuantizationError(
            f"the uint8 input is quantized with scale {scale}, zero point {zero_point}: raw "
            "camera bytes would be misread (expected scale 1, zero point 0)"
        )
    counts: dict[str, int] = {}
    for op in table:
        counts[op["op"]] = counts.get(op["op"], 0) + 1
    return {
        "ops": len(table),
        "op_counts": dict(sorted(counts.items())),
        "input": {
            "dtype": "uint8",
            "shape": inp["shape"].tolist(),
            "scale": scale,
            "zero_point": 0,
        },
        "output": {
            "dtype": "uint8",
            "shape": out["shape"].tolist(),
            "scale": float(out["quantization"][0]),
            "zero_point": int(out["quantization"][1]),
        },
    }


class Classifier:
    """Runs a TFLite classifier on uint8 frames; returns dequantized probabilities."""

    def __init__(self, content: bytes, threads: int | None = None):
        self.content = content
        self.runner = interpreter(content, threads)
        (self.input,) = self.runner.get_input_details()
        (self.output,) = self.runner.get_output_details()
        self.input_dtype = np.dtype(self.input["dtype"])
        self.integer = self.input_dtype.name == "uint8"

    def invoke(self, frame: np.ndarray) -> np.ndarray:
        """One frame (384, 576, 3) uint8 → raw output row (uint8 or float32)."""
        self.runner.set_tensor(self.input["index"], frame[None].astype(self.input_dtype))
        self.runner.invoke()
        return self.runner.get_tensor(self.output["index"])[0]

    def probabilities(self, frame: np.ndarray) -> np.ndarray:
        raw = self.invoke(frame)
        if self.integer:
            scale, zero_point = self.output["quantization"]
            return (raw.astype(np.float32) - zero_point) * scale
        return raw.astype(np.float32)

    def predict(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        return np.stack([self.probabilities(frame) for frame in frames])


def median_latency_ms(
    content: bytes, frame: np.ndarray, threads: int, runs: int = 30, warmup: int = 3
) -> float:
    """Median wall time of one ``invoke`` on ``threads`` threads, in milliseconds."""
    classifier = Classifier(content, threads)
    for _ in range(warmup):
        classifier.invoke(frame)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        classifier.invoke(frame)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def all_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def score_split(
    split: student_data.Split, contents: Sequence[bytes]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Probabilities of every example of ``split`` under each model, and the labels.

    The split is decoded once however many models score it (all threads each).
    """
    classifiers = [Classifier(c, all_threads()) for c in contents]
    scores: list[list[np.ndarray]] = [[] for _ in contents]
    labels = []
    for frame, label in student_data.frames(split):
        for rows, classifier in zip(scores, classifiers, strict=True):
            rows.append(classifier.probabilities(frame))
        labels.append(label)
    return [np.stack(rows) for rows in scores], np.asarray(labels, np.int64)

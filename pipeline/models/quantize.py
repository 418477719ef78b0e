"""``camsdd quantize``: a trained student → float and full-INT8 TFLite, checked and compared.

Reads ``W/models/<name>/model.keras`` and writes next to it ``model_float.tflite``
(the FP32 reference), ``model_int8.tflite`` (every op INT8, uint8 input and output,
calibrated on frames drawn from train) and ``quantize.json``: the op check, the
input/output quantization, and float vs INT8 top-1/top-3 on the comparison splits
with the drop and the top-1 agreement. A float op left in the INT8 file is an error
naming the op, and no ``model_int8.tflite`` is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from typing import Any

import numpy as np
from etils import epath

from pipeline.core import scene_metrics
from pipeline.models import student_data, tflite_model

DEFAULT_SAMPLES = 200


def representative_frames(
    data_dir: str, config: str, split: str, samples: int, seed: int
) -> list[np.ndarray]:
    """Up to ``samples`` frames drawn (seeded shuffle) from ``split``."""
    source = student_data.load_split(data_dir, config, split)
    dataset = source.dataset.shuffle(min(source.num_examples, 10_000), seed=seed).take(samples)
    return [example["image"] for example in dataset.as_numpy_iterator()]


def compare(float_content: bytes, int8_content: bytes, split: student_data.Split) -> dict:
    """Float vs INT8 TFLite on one split: top-1/top-3 of each, the drop, top-1 agreement."""
    (float_scores, int8_scores), labels = tflite_model.score_split(
        split, [float_content, int8_content]
    )
    out: dict[str, Any] = {"examples": len(labels)}
    for k in (1, 3):
        f = scene_metrics.top_k_accuracy(float_scores, labels, k)
        q = scene_metrics.top_k_accuracy(int8_scores, labels, k)
        out[f"float_top{k}"], out[f"int8_top{k}"], out[f"drop_top{k}"] = f, q, f - q
    out["top1_agreement"] = float(
        (scene_metrics.predictions(float_scores) == scene_metrics.predictions(int8_scores)).mean()
    )
    return out


def quantize(
    model_path: str,
    data_dir: str,
    config: str,
    representative_split: str = "train",
    samples: int = DEFAULT_SAMPLES,
    compare_splits: tuple[str, ...] = ("validation", "test"),
    seed: int = 2021,
) -> dict[str, Any]:
    """Converts, checks and compares; writes the files next to ``model_path``."""
    import keras

    path = epath.Path(model_path)
    if not path.exists():
        raise student_data.DataError(f"no trained model {model_path}; run camsdd train first")
    folder = path.parent
    model = keras.saving.load_model(os.fspath(path))
    frames = representative_frames(data_dir, config, representative_split, samples, seed)
    # The converter prints the exported signature; keep the command's output readable.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": the input range is pinned and
        # checked (scale 1, zero point 0) by tflite_model instead.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        float_content = tflite_model.convert_float(model)
        int8_content, check = tflite_model.convert_int8(model, frames)
    (folder / "model_float.tflite").write_bytes(float_content)
    (folder / "model_int8.tflite").write_bytes(int8_content)

    report: dict[str, Any] = {
        "model": os.fspath(path),
        "float_tflite": os.fspath(folder / "model_float.tflite"),
        "int8_tflite": os.fspath(folder / "model_int8.tflite"),
        "float_size_bytes": len(float_content),
        "int8_size_bytes": len(int8_content),
        "representative": {"split": representative_split, "frames": len(frames), "seed": seed},
        "integer_only": check,
        "comparison": {},
    }
    for name in compare_splits:
        split = student_data.load_split(data_dir, config, name)
        report["comparison"][name] = compare(float_content, int8_content, split)
    (folder / "quantize.json").write_text(json.dumps(report, indent=1))
    return report


def print_summary(report: dict[str, Any]) -> None:
    check = report["integer_only"]
    print(
        f"  {report['int8_tflite']}: {report['int8_size_bytes'] / 1e6:.2f} MB "
        f"(float {report['float_size_bytes'] / 1e6:.2f} MB); {check['ops']} ops, all integer; "
        f"uint8 in (scale {check['input']['scale']:g}, zero point "
        f"{check['input']['zero_point']}) and out; calibrated on "
        f"{report['representative']['frames']} {report['representative']['split']} frames"
    )
    for name, c in report["comparison"].items():
        print(
            f"  {name} ({c['examples']}): top-1 float {c['float_top1']:.3f} -> INT8 "
            f"{c['int8_top1']:.3f} (drop {100 * c['drop_top1']:+.1f} pt), top-3 "
            f"{c['float_top3']:.3f} -> {c['int8_top3']:.3f}; top-1 agreement "
            f"{c['top1_agreement']:.3f}"
        )

"""The student on this CPU: training throughput, float vs INT8 accuracy, INT8 vs FP32 latency.

    .venv/bin/python benchmarks/bench_student.py [--augmented 8] [--runs 30]

Builds the demo CamSDD (43 train / 8 validation / 16 test real photos) with the
TFDS builder, trains the demo student exactly as ``camsdd demo`` does (offline
MobileNetV2 α=1.0, 128×192, frozen backbone, 12 epochs), converts it to FP32 and
full-INT8 TFLite and compares, in one run:

* accuracy: float vs INT8 top-1/top-3 on test, on validation+test, and on every
  labeled demo photo under ``--augmented`` seeded augmentations (a larger sample
  for the float–INT8 gap; the photos' own labels);
* latency: median of ``--runs`` invokes, INT8 vs the FP32 TFLite of the same
  model (the named baseline), on 1 thread and all threads, for the demo student,
  MobileNetV2 α=0.35 at 96×144 and the official baseline at 384×576;
* training throughput (images/s after the first epoch) of the demo student, the
  same student fine-tuning every layer, and the official baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import demo
from pipeline.core import scene_metrics
from pipeline.models import student, student_data, tflite_model
from pipeline.models import train as train_stage

DEMO_STUDENT = demo.DEMO_STUDENT


def convert(model, frames) -> tuple[bytes, bytes]:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tflite_model.convert_float(model), tflite_model.convert_int8(model, frames)[0]


def accuracy_rows(float_content, int8_content, frames, labels) -> dict:
    f = tflite_model.Classifier(float_content, tflite_model.all_threads()).predict(frames)
    q = tflite_model.Classifier(int8_content, tflite_model.all_threads()).predict(frames)
    out = {"n": len(labels)}
    for k in (1, 3):
        out[f"float_top{k}"] = scene_metrics.top_k_accuracy(f, labels, k)
        out[f"int8_top{k}"] = scene_metrics.top_k_accuracy(q, labels, k)
    out["agreement"] = float((f.argmax(1) == q.argmax(1)).mean())
    return out


def augmented_frames(splits, copies: int) -> tuple[list[np.ndarray], np.ndarray]:
    import tensorflow as tf

    frames, labels = [], []
    for split in splits:
        for index, (frame, label) in enumerate(student_data.frames(split)):
            for copy in range(copies):
                seed = tf.constant([index, copy], tf.int64)
                out = student_data.augment(tf.constant(frame, tf.float32), label, seed)
                frames.append(np.round(out.numpy()).astype(np.uint8))
                labels.append(label)
    return frames, np.asarray(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--augmented", type=int, default=8, help="augmentations per photo")
    parser.add_argument("--runs", type=int, default=30, help="timed invokes per latency")
    args = parser.parse_args()
    import keras

    threads = tflite_model.all_threads()
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "tfds"
        demo.build_demo_tfds(str(data_dir))
        splits = {
            name: student_data.load_split(str(data_dir), "official", name)
            for name in ("train", "validation", "test")
        }
        calibration = [frame for frame, _ in student_data.frames(splits["train"])]

        print("== Training throughput (images/s after the first epoch; batch 16)")
        config = train_stage.TrainConfig(
            data_dir=str(data_dir), epochs=12, batch_size=16, learning_rate=3e-3
        )
        record = train_stage.train(DEMO_STUDENT, config, f"{scratch}/demo", verbose=0)
        print(
            f"  demo student, frozen backbone (12 epochs): {record['images_per_second_steady']:.1f}"
        )
        short = train_stage.TrainConfig(
            data_dir=str(data_dir), epochs=3, steps_per_epoch=3, batch_size=16,
            validation_split=None,
        )  # fmt: skip
        for label, spec in (
            ("demo student, every layer trained", student.StudentSpec(
                "mobilenetv2", 1.0, (128, 192), "offline", False)),
            ("official baseline 384x576, frozen", student.StudentSpec.baseline()),
        ):  # fmt: skip
            other = train_stage.train(spec, short, f"{scratch}/{spec.architecture}", verbose=0)
            print(f"  {label}: {other['images_per_second_steady']:.1f}")

        print("\n== Float vs INT8 (the demo student, LiteRT)")
        model = keras.saving.load_model(f"{scratch}/demo/model.keras")
        float_content, int8_content = convert(model, calibration)
        sets = {
            "test": [splits["test"]],
            "validation+test": [splits["validation"], splits["test"]],
        }
        print("  set                       n   float top-1/top-3   INT8 top-1/top-3   agreement")
        for name, members in sets.items():
            pairs = [pair for split in members for pair in student_data.frames(split)]
            row = accuracy_rows(
                float_content,
                int8_content,
                [f for f, _ in pairs],
                np.array([label for _, label in pairs]),
            )
            print(_row(name, row))
        frames, labels = augmented_frames(list(splits.values()), args.augmented)
        row = accuracy_rows(float_content, int8_content, frames, labels)
        print(_row(f"all 67 photos x {args.augmented} aug.", row))

        print(f"\n== Latency: median ms per frame, INT8 vs FP32 TFLite ({args.runs} runs)")
        frame = calibration[0]
        print(f"  model                      FP32 1t   INT8 1t  ratio   FP32 {threads}t   INT8 "
              f"{threads}t  ratio   INT8 MB")  # fmt: skip
        models = {
            "demo 1.0 @128x192": (float_content, int8_content),
        }
        for label, spec in (
            ("0.35 @96x144", student.StudentSpec("mobilenetv2", 0.35, (96, 144), "none")),
            ("baseline @384x576", student.StudentSpec.baseline()),
        ):
            models[label] = convert(student.build_student(spec), calibration[:16])
        for label, (fp32, int8) in models.items():
            timings = [
                tflite_model.median_latency_ms(content, frame, n, args.runs)
                for n in (1, threads)
                for content in (fp32, int8)
            ]
            print(
                f"  {label:<24} {timings[0]:8.2f}  {timings[1]:8.2f}"
                f"  {timings[0] / timings[1]:5.2f}"
                f"   {timings[2]:8.2f}  {timings[3]:8.2f}  {timings[2] / timings[3]:5.2f}"
                f"   {len(int8) / 1e6:7.2f}"
            )


def _row(name: str, row: dict) -> str:
    return (
        f"  {name:<24} {row['n']:4d}   {row['float_top1']:.3f} / {row['float_top3']:.3f}"
        f"      {row['int8_top1']:.3f} / {row['int8_top3']:.3f}     {row['agreement']:.3f}"
    )


if __name__ == "__main__":
    main()

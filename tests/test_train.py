"""Train, quantize and evaluate the student for real on the demo CamSDD (built with Beam)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from etils import epath

from pipeline.cli import demo
from pipeline.core import scene_metrics
from pipeline.models import evaluate as evaluate_stage
from pipeline.models import quantize as quantize_stage
from pipeline.models import student, student_data, tflite_model
from pipeline.models import train as train_stage

DEMO_STUDENT = demo.DEMO_STUDENT


def tiny_config(data_dir, **overrides) -> train_stage.TrainConfig:
    settings = dict(data_dir=str(data_dir), epochs=2, steps_per_epoch=2, batch_size=8)
    return train_stage.TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(demo_tfds, tmp_path_factory):
    """The demo student: offline-MobileNetV2, frozen, 12 epochs on the 43 demo train photos."""
    out = tmp_path_factory.mktemp("models") / "demo"
    config = train_stage.TrainConfig(
        data_dir=str(demo_tfds), epochs=12, batch_size=16, learning_rate=3e-3
    )
    record = train_stage.train(DEMO_STUDENT, config, str(out), verbose=0)
    return out, record


@pytest.fixture(scope="module")
def quantized(trained, demo_tfds):
    out, _ = trained
    return quantize_stage.quantize(str(out / "model.keras"), str(demo_tfds), "official")


def test_the_student_trains_and_writes_its_record(trained):
    out, record = trained
    loss = record["history"]["loss"]
    assert len(loss) == 12 and loss[-1] < 0.6 * loss[0]
    assert record["history"]["accuracy"][-1] > 0.8  # fits the 43 training photos
    assert record["train_examples"] == 43 and record["steps_per_epoch"] == 3
    assert record["weights_used"] == "offline" and record["images_per_second_steady"] > 0
    assert record["trainable_parameters"] == 1280 * 30 + 30  # frozen backbone: the head only
    assert json.loads((out / "train.json").read_text())["spec"]["input_size"] == [128, 192]
    assert (out / "checkpoints" / "best.keras").is_file()
    assert not (out / "checkpoints" / "backup").exists()  # removed after a finished run


def test_a_seeded_run_is_reproducible_and_the_seed_matters(demo_tfds, tmp_path):
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        config = tiny_config(demo_tfds, seed=seed, validation_split=None)
        train_stage.train(DEMO_STUDENT, config, str(tmp_path / name), 0)
        model = keras.saving.load_model(tmp_path / name / "model.keras")
        runs[name] = np.concatenate([w.ravel() for w in model.get_weights()])
    assert np.array_equal(runs["a"], runs["b"])
    assert not np.allclose(runs["a"], runs["c"])


def test_a_tiny_random_init_student_trains_every_layer(demo_tfds, tmp_path):
    spec = student.StudentSpec("mobilenetv2", 0.35, (64, 96), "none")
    before = student.build_student(spec, seed=3).get_weights()
    config = tiny_config(demo_tfds, seed=3, epochs=1, validation_split=None)
    record = train_stage.train(spec, config, str(tmp_path / "tiny"), 0)
    after = keras.saving.load_model(tmp_path / "tiny" / "model.keras").get_weights()
    assert record["weights_used"] == "none" and np.isfinite(record["history"]["loss"]).all()
    assert record["trainable_parameters"] > 0.9 * record["parameters"]
    changed = [not np.array_equal(b, a) for b, a in zip(before, after, strict=True)]
    assert changed[0] and changed[-1] and sum(changed) > 0.9 * len(changed)


def test_distillation_and_class_weights_train_on_the_pseudo_config(demo_tfds, tmp_path):
    config = tiny_config(
        demo_tfds,
        config="pseudo",
        split="train+extra_pseudo",
        distill=0.5,
        class_weights="balanced",
        validation_split=None,
    )
    record = train_stage.train(DEMO_STUDENT, config, str(tmp_path / "kd"), 0)
    assert record["train_examples"] == 43 + 2 and np.isfinite(record["history"]["loss"]).all()
    with pytest.raises(student_data.DataError, match="distillation needs soft labels"):
        train_stage.train(
            DEMO_STUDENT, tiny_config(demo_tfds, distill=0.5), str(tmp_path / "no"), 0
        )


def test_training_targets_mix_label_smoothing_and_soft_labels(demo_tfds):
    split = student_data.load_split(str(demo_tfds), "pseudo", "extra_pseudo")
    dataset = student_data.training_dataset(
        split, 2, seed=1, augmentation=False, label_smoothing=0.1, distill=0.25
    )
    frames, targets, weights = next(iter(dataset))
    examples = list(split.dataset.shuffle(2, seed=1).take(2).as_numpy_iterator())
    expected = student_data.mix_targets(
        np.array([e["label"] for e in examples]),
        np.stack([e["soft_label"] for e in examples]),
        label_smoothing=0.1,
        distill=0.25,
    )
    np.testing.assert_allclose(targets.numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(frames.numpy(), np.stack([e["image"] for e in examples]))
    assert weights.numpy().tolist() == [1.0, 1.0]
    # By hand: label 1 of 3 classes, smoothing 0.3, soft label (0.5, 0.5, 0), distill 0.5.
    by_hand = student_data.mix_targets(np.array([1]), np.array([[0.5, 0.5, 0]]), 0.3, 0.5, 3)
    np.testing.assert_allclose(by_hand, [[0.3, 0.65, 0.05]], atol=1e-6)


def test_augmentation_is_seeded_and_stays_a_frame():
    frame = tf.random.stateless_uniform((384, 576, 3), [1, 2], 0, 255)
    one = student_data.augment(frame, tf.constant(0, tf.int64), tf.constant([5, 9], tf.int64))
    again = student_data.augment(frame, tf.constant(0, tf.int64), tf.constant([5, 9], tf.int64))
    other = student_data.augment(frame, tf.constant(0, tf.int64), tf.constant([5, 10], tf.int64))
    assert one.shape == (384, 576, 3) and float(tf.reduce_min(one)) >= 0
    assert float(tf.reduce_max(one)) <= 255
    np.testing.assert_array_equal(one.numpy(), again.numpy())
    assert not np.allclose(one.numpy(), other.numpy())


def test_balanced_class_weights_by_hand():
    weights = student_data.balanced_class_weights(np.array([0, 0, 0, 1]), num_classes=3)
    # n / (present classes * count): 4 / (2 * 3) and 4 / (2 * 1); absent class 0.
    np.testing.assert_allclose(weights, [4 / 6, 2.0, 0.0])


def test_quantization_is_all_int8_and_agrees_with_float(quantized):
    check = quantized["integer_only"]
    assert check["input"] == {
        "dtype": "uint8",
        "shape": [1, 384, 576, 3],
        "scale": 1.0,
        "zero_point": 0,
    }
    assert check["output"]["dtype"] == "uint8" and check["output"]["shape"] == [1, 30]
    assert "CONV_2D" in check["op_counts"] and "DEPTHWISE_CONV_2D" in check["op_counts"]
    content = Path(quantized["int8_tflite"]).read_bytes()
    assert not tflite_model.float_ops(tflite_model.op_table(content))
    both = quantized["comparison"]
    agreement = sum(c["top1_agreement"] * c["examples"] for c in both.values()) / sum(
        c["examples"] for c in both.values()
    )
    assert agreement >= 0.8  # 24 validation+test photos
    assert quantized["int8_size_bytes"] < 0.35 * quantized["float_size_bytes"]


def test_a_float_fallback_is_refused_naming_the_op(trained):
    out, _ = trained
    model = keras.saving.load_model(out / "model.keras")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: activations stay float
    content = converter.convert()
    with pytest.raises(tflite_model.QuantizationError, match=r"op #\d+ [A-Z_0-9]+ has .*float32"):
        tflite_model.check_integer_only(content)


def test_evaluate_reports_accuracy_latency_size_and_plots(quantized, demo_tfds, tmp_path):
    report = evaluate_stage.evaluate(
        quantized["int8_tflite"], str(demo_tfds), "official", latency_runs=3
    )
    test = report["splits"]["test"]
    # The figures are the interpreter's own outputs through the hand-checked metrics.
    split = student_data.load_split(str(demo_tfds), "official", "test")
    classifier = tflite_model.Classifier(Path(quantized["int8_tflite"]).read_bytes())
    scores = classifier.predict(frame for frame, _ in student_data.frames(split))
    assert test["top1"] == scene_metrics.top_k_accuracy(scores, split.labels, 1)
    assert test["top3"] == scene_metrics.top_k_accuracy(scores, split.labels, 3)
    assert test["examples"] == 16 and sum(c["examples"] for c in test["per_class"].values()) == 16
    assert report["integer_only"] and report["size_bytes"] == os.path.getsize(report["model"])
    latency = report["latency"]
    threads = tflite_model.all_threads()
    assert latency["threads_1_ms"] > 0 and latency[f"threads_{threads}_ms"] > 0
    with open(test["confusion_png"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    markdown = Path(report["report_files"][1]).read_text()
    assert "| test | 16 |" in markdown and "per-class accuracy" in markdown
    assert report["challenge_score"]["score"] > 0


def test_missing_split_and_missing_dataset_are_clear_errors(demo_tfds, tmp_path):
    with pytest.raises(student_data.DataError, match="extra_pseudo not in camsdd/official"):
        student_data.load_split(str(demo_tfds), "official", "train+extra_pseudo")
    with pytest.raises(student_data.DataError, match="not built in .* tfds build camsdd"):
        student_data.load_split(str(tmp_path), "official", "train")
    with pytest.raises(student_data.DataError, match="no model file"):
        evaluate_stage.evaluate(str(tmp_path / "none.tflite"), str(demo_tfds), "official")
    (tmp_path / "page.tflite").write_bytes(b"<html>Not Found</html>")
    with pytest.raises(student_data.DataError, match="page.tflite: not a TFLite model"):
        evaluate_stage.evaluate(str(tmp_path / "page.tflite"), str(demo_tfds), "official")


def camsdd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True
    )


def test_cli_errors_name_the_problem(demo_tfds, tmp_path):
    work = ["--work", str(tmp_path), "--data_dir", str(demo_tfds)]
    result = camsdd("train", *work, "--architecture", "resnet50")
    assert result.returncode == 2 and "unknown architecture 'resnet50'" in result.stderr
    result = camsdd("train", *work, "--input-size", "16x24")
    assert result.returncode == 2 and "smaller than 32 pixels" in result.stderr
    result = camsdd("train", *work, "--split", "train+extra_pseudo", "--config", "official")
    assert result.returncode == 2 and "extra_pseudo not in camsdd/official" in result.stderr
    result = camsdd("quantize", *work, "--name", "never-trained")
    assert result.returncode == 2 and "run camsdd train first" in result.stderr


def test_every_flag_is_in_the_help():
    for command, flags in {
        "train": ["--architecture", "--alpha", "--input-size", "--weights", "--distill"],
        "quantize": ["--representative-split", "--representative-samples"],
        "evaluate": ["--latency-runs", "--score-constant", "--splits"],
        "ablate": ["--epochs", "--seed", "--splits"],
    }.items():
        result = camsdd(command, "--help")
        assert result.returncode == 0
        for flag in flags:
            assert flag in result.stdout


def test_a_backup_resumes_only_a_run_with_the_same_options(tmp_path, capsys):
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "backup").mkdir(parents=True)
    config = tiny_config(tmp_path)
    train_stage.resume_only_the_same_run(epath.Path(checkpoints), DEMO_STUDENT, config)
    assert not (checkpoints / "backup").exists()  # a backup of unknown options: not resumed
    assert "options changed since the interrupted run" in capsys.readouterr().out
    (checkpoints / "backup").mkdir()
    train_stage.resume_only_the_same_run(epath.Path(checkpoints), DEMO_STUDENT, config)
    assert (checkpoints / "backup").exists()  # the same options: Keras resumes it
    other = tiny_config(tmp_path, learning_rate=0.1)
    train_stage.resume_only_the_same_run(epath.Path(checkpoints), DEMO_STUDENT, other)
    assert not (checkpoints / "backup").exists()

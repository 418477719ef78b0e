"""``camsdd train``: the mobile student on ``train`` or ``train+extra_pseudo``.

Writes ``W/models/<name>/``: ``model.keras`` (the last epoch), ``checkpoints/``
(``best.keras`` by validation top-1 when there is a validation split, and a
backup Keras restores from if a run is interrupted and started again) and
``train.json`` (the spec, every option, the data counts, per-epoch history and
training throughput).

A run is seeded end to end (weights, shuffling, augmentation, op determinism),
so the same command gives the same model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from typing import Any

import numpy as np
from etils import epath

from pipeline.core import classes
from pipeline.models import student, student_data

MODELS = "models"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (everything but the architecture, which is ``student.StudentSpec``).

    ``budget_split`` fixes the number of steps per epoch from another split's size:
    the ablation trains ``train`` and ``train+extra_pseudo`` for the same number of
    steps (the same images seen), so only the data differs.
    """

    data_dir: str
    config: str = "official"
    split: str = "train"
    validation_split: str | None = "validation"
    epochs: int = 10
    steps_per_epoch: int | None = None
    budget_split: str | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    label_smoothing: float = 0.1
    class_weights: str = "none"
    distill: float = 0.0
    augment: bool = True
    seed: int = 2021


def model_dir(work: str, name: str) -> epath.Path:
    return epath.Path(work) / MODELS / name


class ThroughputMeter:
    """Keras callback: images per second of the training steps alone, per epoch."""

    def __init__(self, batch_size: int):
        import keras

        meter = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                meter._start = None
                meter._steps = 0

            def on_train_batch_begin(self, batch, logs=None):
                if meter._start is None:
                    meter._start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                meter._steps += 1
                meter._end = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                seconds = meter._end - meter._start
                meter.per_epoch.append(meter._steps * meter.batch_size / seconds)

        self.batch_size = batch_size
        self.per_epoch: list[float] = []
        self._start: float | None = None
        self._end = 0.0
        self._steps = 0
        self.callback = _Callback()

    @property
    def steady(self) -> float:
        """Images/s after the first epoch (which includes graph tracing), or the only epoch's."""
        later = self.per_epoch[1:] or self.per_epoch
        return float(np.median(later)) if later else 0.0


def resume_only_the_same_run(
    checkpoints: epath.Path, spec: student.StudentSpec, config: TrainConfig
) -> None:
    """A killed run resumes from its backup only if the options are the same.

    With other options the backup is of another run: it is removed, and a line says
    so, instead of silently continuing the old run under the new name.
    """
    options = json.dumps(
        {"spec": student.spec_to_dict(spec), "config": dataclasses.asdict(config)},
        sort_keys=True,
    )
    record = checkpoints / "backup_options.json"
    backup = checkpoints / "backup"
    if backup.exists() and (not record.exists() or record.read_text() != options):
        print(f"  options changed since the interrupted run: starting afresh ({backup} removed)")
        backup.rmtree()
    record.write_text(options)


def epoch_lines(epochs: int):
    """Keras callback: one line per epoch (what a log wants instead of Keras' two)."""
    import keras

    class _EpochLine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = ", ".join(
                f"{name.replace('_', ' ')} {logs[name]:.3f}"
                for name in ("loss", "accuracy", "top3", "val_accuracy", "val_top3")
                if name in logs
            )
            seconds = time.monotonic() - self._started
            print(f"  epoch {epoch + 1}/{epochs}: {shown} ({seconds:.0f} s)", flush=True)

    return _EpochLine()


def train(spec: student.StudentSpec, config: TrainConfig, out_dir: str, verbose: int = 1) -> dict:
    """Trains one student; returns (and writes) the ``train.json`` record.

    ``verbose`` 1 shows Keras' progress bar; 0 prints one line per epoch.
    """
    import keras
    import tensorflow as tf

    student.validate(spec)
    if not 0 <= config.distill <= 1:
        raise student_data.DataError(f"--distill must be in [0, 1], not {config.distill}")
    if not 0 <= config.label_smoothing < 1:
        raise student_data.DataError(
            f"--label-smoothing must be in [0, 1), not {config.label_smoothing}"
        )
    if config.class_weights not in ("none", "balanced"):
        raise student_data.DataError(f"unknown --class-weights {config.class_weights!r}")
    training = student_data.load_split(config.data_dir, config.config, config.split)
    validation = (
        student_data.load_split(config.data_dir, config.config, config.validation_split)
        if config.validation_split
        else None
    )
    budget_examples = training.num_examples
    if config.budget_split:
        budget_examples = student_data.load_split(
            config.data_dir, config.config, config.budget_split
        ).num_examples
    steps = config.steps_per_epoch or math.ceil(budget_examples / config.batch_size)
    weights = (
        student_data.balanced_class_weights(training.labels)
        if config.class_weights == "balanced"
        else None
    )

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model = student.build_student(spec, seed=config.seed)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, steps * config.epochs)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(3, name="top3"),
        ],
        # XLA compiles the train step for tens of seconds on CPU; plain graphs start at once.
        jit_compile=False,
    )
    out = epath.Path(out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    resume_only_the_same_run(out / "checkpoints", spec, config)
    meter = ThroughputMeter(config.batch_size)
    callbacks = [
        meter.callback,
        # Restores the last finished epoch if an earlier run with this name was killed.
        keras.callbacks.BackupAndRestore(os.fspath(out / "checkpoints" / "backup")),
    ]
    if verbose == 0:
        callbacks.append(epoch_lines(config.epochs))
    if validation is not None:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                os.fspath(out / "checkpoints" / "best.keras"),
                monitor="val_accuracy",
                mode="max",
                save_best_only=True,
            )
        )
    data = student_data.training_dataset(
        training,
        config.batch_size,
        config.seed,
        augmentation=config.augment,
        label_smoothing=config.label_smoothing,
        distill=config.distill,
        class_weights=weights,
    )
    started = time.monotonic()
    # Keras warns that fit's shuffle flag is ignored for a tf.data input; ours is shuffled.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    history = model.fit(
        data,
        epochs=config.epochs,
        steps_per_epoch=steps,
        validation_data=(
            student_data.evaluation_dataset(validation, config.batch_size) if validation else None
        ),
        callbacks=callbacks,
        verbose=verbose,
    )
    seconds = time.monotonic() - started
    model.save(os.fspath(out / "model.keras"))

    record: dict[str, Any] = {
        "model": os.fspath(out / "model.keras"),
        "spec": student.spec_to_dict(spec),
        "weights_used": student.resolve_weights(spec),
        "config": dataclasses.asdict(config),
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "train_examples": training.num_examples,
        "train_examples_per_class": {
            classes.CLASS_FOLDERS[i]: int(n)
            for i, n in enumerate(np.bincount(training.labels, minlength=classes.NUM_CLASSES))
            if n
        },
        "validation_examples": validation.num_examples if validation else 0,
        "steps_per_epoch": steps,
        "images_seen": steps * config.epochs * config.batch_size,
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "images_per_second": meter.per_epoch,
        "images_per_second_steady": meter.steady,
        "seconds": seconds,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    (out / "train.json").write_text(json.dumps(record, indent=1))
    return record


def print_summary(record: dict) -> None:
    history = record["history"]
    last = {k: v[-1] for k, v in history.items()}
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in last.items())
    print(
        f"  {record['train_examples']} training examples, {record['steps_per_epoch']} steps x "
        f"{len(history['loss'])} epochs; last epoch: {metrics}"
    )
    print(
        f"  throughput {record['images_per_second_steady']:.1f} images/s "
        f"({record['weights_used']} weights, {record['trainable_parameters']:,} of "
        f"{record['parameters']:,} parameters trained); {record['seconds']:.0f} s"
    )
    print(f"  model: {record['model']}")

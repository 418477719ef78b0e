"""What the student trains and is evaluated on: ``camsdd`` TFDS splits as tf.data.

Each element is ``(frame, target, sample_weight)``: the 384×576 frame as float32
0..255 (what the model's uint8 input carries), the target distribution the loss
compares against, and a per-example weight (1, or the class weight).

The target mixes the hard label and the teacher's soft label:
``(1 − d) · smooth(one_hot) + d · soft_label``. Cross-entropy against it equals
``(1 − d) · CE(label) + d · KL(soft_label ‖ p)`` plus a constant, so one loss gives
label smoothing and distillation from the soft labels stored in ``camsdd/pseudo``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from pipeline.core import classes
from pipeline.core.errors import UserError

DATASET = "camsdd"
# Mirrored text and QR codes are not what a camera sees: no flips for these classes.
NO_FLIP_CLASSES = (
    classes.class_index("28_Text_Documents"),
    classes.class_index("29_QR_images"),
)


class DataError(UserError, ValueError):
    """The asked-for data is not there; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class Split:
    """A loaded split: the tf.data of examples and what it holds."""

    name: str
    dataset: Any  # tf.data.Dataset of feature dicts (image uint8, label, soft_label?)
    num_examples: int
    labels: np.ndarray  # int64 (num_examples,)
    has_soft_labels: bool


def builder(data_dir: str, config: str):
    """The built ``camsdd/<config>`` in ``data_dir``, or a ``DataError`` saying how to build it."""
    import tensorflow_datasets as tfds

    import tfds_camsdd  # noqa: F401  (registers the builder)

    name = f"{DATASET}/{config}"
    try:
        found = tfds.builder(name, data_dir=os.fspath(data_dir))
    except Exception as error:  # unknown config name
        raise DataError(f"{name}: {error}") from error
    if not found.is_prepared():
        raise DataError(
            f"{name} is not built in {data_dir}; build it first: tfds build camsdd --imports "
            f"tfds_camsdd --config {config} --manual_dir M --data_dir {data_dir}"
            + (" (with CAMSDD_EXTRA_MANIFEST=WORK/pseudolabel)" if config == "pseudo" else "")
        )
    return found


def split_names(split: str) -> list[str]:
    """``"train+extra_pseudo"`` → ["train", "extra_pseudo"] (TFDS split arithmetic, no slicing)."""
    return [part.strip() for part in split.split("+") if part.strip()]


def load_split(data_dir: str, config: str, split: str) -> Split:
    """Loads ``split`` of ``camsdd/<config>``; every missing piece is a ``DataError``."""
    found = builder(data_dir, config)
    available = sorted(found.info.splits.keys())
    names = split_names(split)
    missing = [name for name in names if name not in available]
    if not names or missing:
        hint = ""
        if "extra_pseudo" in missing:
            hint = (
                "; extra_pseudo exists in camsdd/pseudo (--config pseudo), built with "
                "CAMSDD_EXTRA_MANIFEST=WORK/pseudolabel"
            )
        raise DataError(
            f"split {split!r}: {', '.join(missing) or 'no split named'} not in "
            f"{DATASET}/{config} (it has {', '.join(available)}){hint}"
        )
    num_examples = sum(found.info.splits[name].num_examples for name in names)
    if not num_examples:
        raise DataError(f"split {split!r} of {DATASET}/{config} has no examples")
    dataset = found.as_dataset(split=split, shuffle_files=False)
    labels_only = found.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": _skip_decoding()},
    ).map(lambda example: example["label"])
    labels = np.fromiter(labels_only.as_numpy_iterator(), np.int64, num_examples)
    return Split(
        name=split,
        dataset=dataset,
        num_examples=num_examples,
        labels=labels,
        has_soft_labels="soft_label" in found.info.features,
    )


def _skip_decoding():
    import tensorflow_datasets as tfds

    return tfds.decode.SkipDecoding()


def balanced_class_weights(
    labels: np.ndarray, num_classes: int = classes.NUM_CLASSES
) -> np.ndarray:
    """``n / (C_present · count_c)`` per class (sklearn's "balanced"); 0 for absent classes."""
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, np.float64)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights.astype(np.float32)


def mix_targets(
    labels: np.ndarray,
    soft_labels: np.ndarray | None,
    label_smoothing: float = 0.0,
    distill: float = 0.0,
    num_classes: int = classes.NUM_CLASSES,
) -> np.ndarray:
    """The training target per row (numpy reference of what the tf.data map computes)."""
    one_hot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels, np.int64)]
    target = one_hot * (1 - label_smoothing) + label_smoothing / num_classes
    if distill:
        if soft_labels is None:
            raise DataError("distillation needs soft labels: use --config pseudo")
        target = (1 - distill) * target + distill * np.asarray(soft_labels, np.float32)
    return target


def _target_fn(label_smoothing: float, distill: float, use_soft: bool):
    import tensorflow as tf

    def target(example):
        one_hot = tf.one_hot(example["label"], classes.NUM_CLASSES)
        mixed = one_hot * (1 - label_smoothing) + label_smoothing / classes.NUM_CLASSES
        if use_soft:
            mixed = (1 - distill) * mixed + distill * tf.cast(example["soft_label"], tf.float32)
        return mixed

    return target


def augment(frame, label, seed):
    """Seeded, stateless: zoom-crop (80–100% of the frame), flip, brightness, contrast.

    ``frame`` is float32 (384, 576, 3) in 0..255; ``seed`` is a shape-(2,) int tensor,
    so the same (run seed, step) always gives the same image.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 5)
    height, width = frame.shape[0], frame.shape[1]
    scale = tf.random.stateless_uniform([], seeds[0], 0.8, 1.0)
    offset = tf.random.stateless_uniform([2], seeds[1], 0.0, 1.0) * (1.0 - scale)
    box = tf.stack([offset[0], offset[1], offset[0] + scale, offset[1] + scale])
    frame = tf.image.crop_and_resize(frame[None], box[None], [0], [height, width])[0]
    flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
    flip = tf.logical_and(flip, tf.reduce_all(tf.not_equal(label, NO_FLIP_CLASSES)))
    frame = tf.cond(flip, lambda: tf.image.flip_left_right(frame), lambda: frame)
    frame = tf.image.stateless_random_brightness(frame, 0.1 * 255.0, seeds[3])
    frame = tf.image.stateless_random_contrast(frame, 0.8, 1.2, seeds[4])
    return tf.clip_by_value(frame, 0.0, 255.0)


def training_dataset(
    split: Split,
    batch_size: int,
    seed: int,
    *,
    augmentation: bool = True,
    label_smoothing: float = 0.0,
    distill: float = 0.0,
    class_weights: np.ndarray | None = None,
):
    """Shuffled (seeded, reshuffled each epoch), repeated, augmented batches."""
    import tensorflow as tf

    if distill and not split.has_soft_labels:
        raise DataError("distillation needs soft labels: use --config pseudo")
    target = _target_fn(label_smoothing, distill, bool(distill))
    weights = tf.constant(
        class_weights if class_weights is not None else np.ones(classes.NUM_CLASSES, np.float32)
    )

    def prepare(step, example):
        frame = tf.cast(example["image"], tf.float32)
        if augmentation:
            frame = augment(frame, example["label"], tf.stack([tf.cast(seed, tf.int64), step]))
        return frame, target(example), tf.gather(weights, example["label"])

    dataset = (
        split.dataset.shuffle(min(split.num_examples, 10_000), seed=seed)
        .repeat()
        .enumerate()
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size, drop_remainder=False)
        .prefetch(tf.data.AUTOTUNE)
    )
    return dataset


def evaluation_dataset(split: Split, batch_size: int):
    """Frames and one-hot targets in split order, unaugmented."""
    import tensorflow as tf

    def prepare(example):
        return (
            tf.cast(example["image"], tf.float32),
            tf.one_hot(example["label"], classes.NUM_CLASSES),
        )

    return (
        split.dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def frames(split: Split, limit: int | None = None):
    """(uint8 frame, label) pairs in split order, as numpy (for the TFLite interpreter)."""
    dataset = split.dataset if limit is None else split.dataset.take(limit)
    for example in dataset.as_numpy_iterator():
        yield example["image"], int(example["label"])

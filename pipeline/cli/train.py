"""``camsdd train``: its flags; the training is ``pipeline.models.train``."""

from __future__ import annotations

import argparse
import os

from pipeline.cli import common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        description="Trains a mobile scene classifier on the built camsdd TFDS dataset. The "
        "model takes 576x384 uint8 frames and resizes/normalizes inside the graph. Writes "
        "WORK/models/NAME/{model.keras, checkpoints/, train.json}.",
    )
    common.add_model_arguments(parser)
    parser.add_argument(
        "--split",
        default="train",
        help="training split: train, or train+extra_pseudo (needs camsdd/pseudo)",
    )
    common.add_student_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.models import train

    spec, config = common.student_spec(args), common.train_config(args, args.split)
    folder = os.fspath(train.model_dir(args.work, args.name))
    train.print_summary(train.train(spec, config, folder, common.progress_verbosity()))
    return 0

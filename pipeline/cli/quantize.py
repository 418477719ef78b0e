"""``camsdd quantize``: its flags; the conversion is ``pipeline.models.quantize``."""

from __future__ import annotations

import argparse
import os

from pipeline.cli import common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize",
        description="Converts WORK/models/NAME/model.keras to model_float.tflite and "
        "model_int8.tflite (post-training full-integer quantization calibrated on train "
        "frames), fails naming any op left in float, and reports float vs INT8 top-1/top-3 "
        "in quantize.json.",
    )
    common.add_model_arguments(parser)
    parser.add_argument("--model", help="a .keras file (default WORK/models/NAME/model.keras)")
    parser.add_argument(
        "--config",
        default="official",
        choices=("official", "pseudo"),
        help="camsdd config for calibration and comparison (default official)",
    )
    parser.add_argument(
        "--representative-split",
        default="train",
        help="frames to calibrate on (default train)",
    )
    parser.add_argument(
        "--representative-samples",
        type=int,
        default=200,
        help="how many (default %(default)s)",
    )
    parser.add_argument(
        "--compare-splits",
        default="validation,test",
        help="splits for float vs INT8 accuracy (default validation,test)",
    )
    parser.add_argument("--seed", type=int, default=2021, help="calibration sample seed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.models import quantize, train

    model = args.model or os.fspath(train.model_dir(args.work, args.name) / "model.keras")
    report = quantize.quantize(
        model,
        common.data_dir_of(args),
        args.config,
        args.representative_split,
        args.representative_samples,
        common.splits_of(args.compare_splits),
        args.seed,
    )
    quantize.print_summary(report)
    return 0

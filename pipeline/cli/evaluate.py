"""``camsdd evaluate``: its flags; the evaluation is ``pipeline.models.evaluate``."""

from __future__ import annotations

import argparse
import os

from pipeline.cli import common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        description="Runs a TFLite model with the LiteRT interpreter on camsdd validation and "
        "test and writes report.json, report.md and confusion-matrix PNGs next to it, in "
        "evaluation/<model stem>/.",
    )
    common.add_model_arguments(parser)
    parser.add_argument(
        "--model",
        help="the .tflite file (default WORK/models/NAME/model_int8.tflite)",
    )
    parser.add_argument(
        "--config",
        default="official",
        choices=("official", "pseudo"),
        help="camsdd config to read validation/test from (same images in both; default official)",
    )
    parser.add_argument(
        "--splits",
        default="validation,test",
        help="comma-separated splits (default validation,test)",
    )
    parser.add_argument(
        "--latency-runs", type=int, default=30, help="timed runs per thread count (default 30)"
    )
    parser.add_argument(
        "--score-constant",
        type=float,
        default=1.0,
        help="C in the challenge score 2^(2*(top1+top3)) / (C * runtime) (default 1)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.models import evaluate, train

    folder = train.model_dir(args.work, args.name)
    report = evaluate.evaluate(
        args.model or os.fspath(folder / "model_int8.tflite"),
        common.data_dir_of(args),
        args.config,
        common.splits_of(args.splits),
        latency_runs=args.latency_runs,
        score_constant=args.score_constant,
    )
    evaluate.print_summary(report)
    return 0

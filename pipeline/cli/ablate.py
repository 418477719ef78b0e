"""``camsdd ablate``: its flags; the two arms are ``pipeline.models.ablate``."""

from __future__ import annotations

import argparse

from pipeline.cli import common
from pipeline.core.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate",
        description="Trains the same student on train and on train+extra_pseudo of "
        "camsdd/pseudo (same seed, same number of steps), quantizes both to INT8, evaluates "
        "both, and reports the difference in WORK/models/NAME/ablation.{json,md}.",
    )
    common.add_model_arguments(parser, name="ablation")
    parser.add_argument(
        "--splits", default="validation,test", help="evaluation splits (default validation,test)"
    )
    parser.add_argument(
        "--latency-runs", type=int, default=30, help="timed runs per thread count (default 30)"
    )
    common.add_student_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.models import ablate

    if args.config == "official":
        raise UserError("ablate needs camsdd/pseudo (it holds extra_pseudo); drop --config")
    report = ablate.ablate(
        common.student_spec(args),
        common.train_config(args, "train"),
        args.work,
        args.name,
        common.splits_of(args.splits),
        common.progress_verbosity(),
        args.latency_runs,
    )
    for kind, per_split in report["difference_with_minus_without"].items():
        for split, diff in per_split.items():
            print(
                f"  with - without extra_pseudo, {kind} {split}: top-1 "
                f"{100 * diff['top1']:+.1f} pt, top-3 {100 * diff['top3']:+.1f} pt"
            )
    print(f"  report: {', '.join(report['report_files'])}")
    return 0

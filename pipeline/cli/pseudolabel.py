"""``camsdd pseudolabel``: its flags; the Beam pipeline is ``pipeline.stages.pseudolabel``."""

from __future__ import annotations

import argparse

from pipeline.cli import common
from pipeline.core import pseudolabel


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = pseudolabel.DEFAULT_CONFIG
    parser = subparsers.add_parser(
        "pseudolabel",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Trains K logistic-regression heads on the cached teacher embeddings of "
        "the --labeled training images (stratified folds: each head never sees one fold, "
        "which gives out-of-fold (OOF) confidence for every labeled image), calibrates a "
        "threshold per class on the OOF predictions, then scores every kept row of "
        "W/dedup/manifest-*.parquet. A candidate is kept when all heads agree, the mean "
        "max-probability reaches its class threshold and (with --query-match) the label "
        "is the class searched for; else it is dropped as fold_disagreement, "
        "low_confidence or query_mismatch, and over_class_cap beyond --max-per-class. "
        "Writes W/pseudolabel/manifest-*.parquet, report.{json,md}, "
        "confidence_histograms.png, reliability.png, label_issues.csv (official training "
        "images whose OOF prediction contradicts their label, for review) and oof.parquet.",
        epilog="Run `camsdd embed --work W --reference CAMSDD_ROOT` and `camsdd dedup` "
        "first. Any other --flag is a Beam pipeline option (--runner DataflowRunner …).",
    )
    common.add_work_argument(parser)
    parser.add_argument(
        "--labeled", required=True, help="CAMSDD_ROOT whose training/ images train the heads"
    )
    parser.add_argument(
        "--folds", type=int, default=defaults.folds, help="K folds and heads (default %(default)s)"
    )
    parser.add_argument(
        "--target-precision",
        type=float,
        default=defaults.target_precision,
        help="OOF precision each class threshold must reach (default %(default)s)",
    )
    parser.add_argument(
        "--threshold-floor",
        type=float,
        default=defaults.threshold_floor,
        help="lowest allowed threshold on the mean max-probability (default %(default)s)",
    )
    parser.add_argument(
        "--min-support",
        type=int,
        default=defaults.min_support,
        help="OOF predictions a class needs for its own threshold; fewer use the pooled "
        "threshold of all classes (default %(default)s)",
    )
    parser.add_argument(
        "--no-agreement",
        action="store_true",
        help="do not require all K heads to agree on the class",
    )
    parser.add_argument(
        "--query-match",
        action="store_true",
        help="also require the label to be the class the crawler searched for",
    )
    parser.add_argument(
        "--max-per-class",
        type=int,
        default=defaults.max_per_class,
        help="most images one class may add, the most confident first; 0: no cap "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--regularization",
        type=float,
        default=defaults.regularization,
        help="inverse L2 strength C of the logistic-regression heads (default %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="fold seed (default %(default)s)"
    )
    common.add_teacher_arguments(parser, "the backbone whose cached embeddings to use: ")
    parser.set_defaults(func=run, accepts_beam_options=True)


def config_from_args(args: argparse.Namespace) -> pseudolabel.PseudolabelConfig:
    return pseudolabel.PseudolabelConfig(
        folds=args.folds,
        target_precision=args.target_precision,
        threshold_floor=args.threshold_floor,
        min_support=args.min_support,
        require_agreement=not args.no_agreement,
        require_query_match=args.query_match,
        max_per_class=args.max_per_class,
        regularization=args.regularization,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.reports import pseudolabel_report
    from pipeline.stages import pseudolabel as pseudolabel_stage
    from pipeline.store import manifest

    report = pseudolabel_stage.run_pseudolabel(
        args.work, args.labeled, config_from_args(args), common.teacher_spec(args), args.beam_args
    )
    print(pseudolabel_report.render_text(report))
    return manifest.print_locations(report)

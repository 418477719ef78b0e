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
        "which gives out-of-fold (OOF) confidence for every labeled image). cleanlab's "
        "confident learning on the OOF probabilities estimates which official labels are "
        "wrong; each class's threshold is the lowest confidence at which its OOF "
        "predictions reach --target-precision against those cleaned labels. Class "
        "prototypes (mean embeddings) give an out-of-distribution score, cut where held-out "
        "labeled images and OOD proxies (shuffled features; sampled dedup-kept candidates "
        "whose query class every head rejects) separate best. Classes with fewer labeled "
        "images than --folds or --min-support OOF predictions use a few-shot rule: the "
        "nearest prototype in every fold must agree. Every kept row of "
        "W/dedup/manifest-*.parquet is then scored: dropped as out_of_distribution, "
        "fold_disagreement, prototype_disagreement, low_confidence, query_mismatch (with "
        "--query-match) or over_class_cap (beyond --max-per-class), else kept. "
        "Writes W/pseudolabel/manifest-*.parquet, report.{json,md}, "
        "confidence_histograms.png, reliability.png, precision_coverage.png (rules (a) "
        "argmax, (b) one global threshold, (c) this rule; from OOF and from --truth), "
        "label_issues.csv (official training images whose OOF prediction contradicts "
        "their label, for review) and oof.parquet.",
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
        help="OOF predictions a class needs for its own threshold; a class with fewer (or "
        "with fewer labeled images than --folds) uses the few-shot prototype rule "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--no-ood",
        action="store_true",
        help="do not drop candidates far from their class prototype (out_of_distribution)",
    )
    parser.add_argument(
        "--max-id-loss",
        type=float,
        default=defaults.max_id_loss,
        help="most held-out labeled images the OOD cut may reject (default %(default)s)",
    )
    parser.add_argument(
        "--pool-sample",
        type=int,
        default=defaults.pool_sample,
        help="dedup-kept candidates scored before the run for OOD proxies (default %(default)s)",
    )
    parser.add_argument(
        "--noise-method",
        choices=("credit", "exclude", "rate"),
        default=defaults.noise_method,
        help="how official labels cleanlab flags count when calibrating thresholds: the "
        "OOF prediction gets the credit, they are left out, or cleanlab's noise rates "
        "correct the precision (default %(default)s)",
    )
    parser.add_argument(
        "--truth",
        help="optional CSV of candidates' known classes (key or url, true_class) for the "
        "report's precision-coverage curves against the truth",
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
        "--no-query-prior",
        action="store_true",
        help="judge candidates labeled as their crawl query by τ_c like the others, "
        "not by the lower τ^Q that query agreement earns",
    )
    parser.add_argument(
        "--query-prior-strength",
        type=float,
        default=defaults.query_prior_strength,
        help="pseudo-candidates shrinking each query's estimated precision toward the "
        "pool's (default %(default)s)",
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
        ood=not args.no_ood,
        max_id_loss=args.max_id_loss,
        pool_sample=args.pool_sample,
        noise_method=args.noise_method,
        query_prior=not args.no_query_prior,
        query_prior_strength=args.query_prior_strength,
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.reports import pseudolabel_report
    from pipeline.stages import pseudolabel as pseudolabel_stage
    from pipeline.store import manifest

    report = pseudolabel_stage.run_pseudolabel(
        args.work,
        args.labeled,
        config_from_args(args),
        common.teacher_spec(args),
        args.beam_args,
        truth=args.truth,
    )
    print(pseudolabel_report.render_text(report))
    return manifest.print_locations(report)

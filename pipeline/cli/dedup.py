"""``camsdd dedup``: its flags; the Beam pipeline is ``pipeline.stages.dedup``."""

from __future__ import annotations

import argparse

from pipeline.cli import common
from pipeline.core import dedup


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = dedup.DedupConfig()
    parser = subparsers.add_parser(
        "dedup",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reads the kept rows of W/fetch/manifest-*.parquet and writes "
        "W/dedup/manifest-*.parquet (one row per candidate) and W/dedup/report.{json,md}. "
        "A candidate that matches a labeled image of --reference (equal sha256, a pHash "
        "within --radius bits, or a teacher-embedding cosine >= --min-cosine) is dropped "
        "as leak:test, leak:validation or duplicate_of_train, and so are the other "
        "members of its duplicate cluster. Within the candidates, each cluster keeps "
        "the largest photo inside any letterbox (then the most permissive license); the others "
        "are dropped as duplicate_of:<kept key>.",
        epilog="Embeddings are used when `camsdd embed --work W` has cached them. Any other "
        "--flag is a Beam pipeline option (--runner DataflowRunner …, --direct_num_workers).",
    )
    common.add_work_argument(parser)
    parser.add_argument(
        "--reference",
        help="CAMSDD_ROOT (training/ validation/ test/) to check candidates against; "
        "without it only duplicates within the candidates are found",
    )
    parser.add_argument(
        "--radius",
        type=int,
        default=defaults.radius,
        help="Hamming radius in bits (of 64) at which two pHashes match (default %(default)s)",
    )
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=defaults.min_cosine,
        help="teacher-embedding cosine similarity at which two images match (default %(default)s)",
    )
    parser.add_argument(
        "--no-embeddings",
        action="store_true",
        help="match on hashes only, even when embeddings are cached",
    )
    common.add_teacher_arguments(parser, "the backbone whose cached embeddings to use: ")
    parser.set_defaults(func=run, accepts_beam_options=True)


def run(args: argparse.Namespace) -> int:
    config = dedup.DedupConfig(
        radius=args.radius, min_cosine=args.min_cosine, embeddings=not args.no_embeddings
    )
    from pipeline.reports import dedup_report
    from pipeline.stages import dedup as dedup_stage
    from pipeline.store import manifest

    report = dedup_stage.run_dedup(
        args.work, args.reference, config, args.beam_args, common.teacher_spec(args)
    )
    print(dedup_report.render_text(report))
    return manifest.print_locations(report)

"""``camsdd review`` and ``camsdd review export``: its flags; the work is ``labeling_ui``."""

from __future__ import annotations

import argparse

from pipeline.cli import common
from pipeline.core.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "review",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Builds (or updates in place) the FiftyOne review dataset from what the "
        "stages wrote: every official image and every dedup-kept candidate, with labels, "
        "confidences, provenance, duplicates and Brain fields, in a MongoDB of the work dir's "
        "own (W/review/db). Then serves the App on 127.0.0.1 until Ctrl-C. Reviewers tag "
        "samples accept or reject, or change their `label` to another class; `camsdd review "
        "export --work W` writes W/review/corrections.parquet, which the next pseudolabel "
        "run and tfds build apply.",
    )
    parser.add_argument(
        "action", nargs="?", choices=("export",), help="export: write the corrections file"
    )
    common.add_work_argument(parser)
    parser.add_argument("--labeled", help="CAMSDD_ROOT (needed unless exporting)")
    parser.add_argument(
        "--port", type=int, default=5151, help="App port on 127.0.0.1 (default %(default)s)"
    )
    parser.add_argument(
        "--no-app", action="store_true", help="build or update the dataset and exit"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from labeling_ui import review

    if args.action == "export":
        return review.export(args.work)
    if not args.labeled:
        raise UserError("camsdd review needs --labeled CAMSDD_ROOT (or: camsdd review export)")
    return review.run(args.work, args.labeled, args.port, app=not args.no_app)

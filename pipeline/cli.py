"""The ``camsdd`` command: one entry point, one subcommand per stage.

Each stage module adds its subcommand through ``add_parser(subparsers)`` and
sets ``func``; every stage works in the same ``--work`` directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline import (
    __version__,
    ablate_stage,
    camsdd_layout,
    crawl_stage,
    dedup_stage,
    demo,
    embed_stage,
    evaluate_stage,
    fetch_stage,
    pseudolabel_stage,
    quantize_stage,
    train_stage,
)


def _check(args: argparse.Namespace) -> int:
    try:
        root = camsdd_layout.find_camsdd_root(args.root)
        scan = camsdd_layout.scan_camsdd(root)
    except camsdd_layout.CamsddLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(scan.summary())
    for warning in scan.count_warnings():
        print(f"  warning: {warning}")
    return 0


def _add_check_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check a CamSDD folder before building: splits, class folders, counts",
        description="Scans a CamSDD folder (or a manual dir holding CamSDD/ ) without "
        "decoding images: reports image counts per split against the official release, "
        "empty classes, ignored files, and fails on unknown class folders.",
    )
    parser.add_argument("root", help="CAMSDD_ROOT, or a folder that holds CamSDD/")
    parser.set_defaults(func=_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camsdd",
        description="Grow CamSDD with crawled, pseudo-labeled images; build it with "
        "`tfds build camsdd --imports tfds_camsdd`.",
    )
    parser.add_argument("--version", action="version", version=f"camsdd {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(subparsers)
    _add_check_parser(subparsers)
    crawl_stage.add_parser(subparsers)
    fetch_stage.add_parser(subparsers)
    embed_stage.add_parser(subparsers)
    dedup_stage.add_parser(subparsers)
    pseudolabel_stage.add_parser(subparsers)
    train_stage.add_parser(subparsers)
    quantize_stage.add_parser(subparsers)
    evaluate_stage.add_parser(subparsers)
    ablate_stage.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Beam stages pass unknown --flags on as pipeline options (--runner, Dataflow's …).
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_beam_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""``camsdd check``: scan a CamSDD folder (or its zip) the way the build will read it."""

from __future__ import annotations

import argparse

from pipeline.store import camsdd_layout


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        description="Scans a CamSDD folder (or a manual dir holding CamSDD/ or CamSDD.zip) "
        "without decoding images: reports image counts per split against the official "
        "release, empty classes and ignored files, and exits non-zero wherever the build "
        "would refuse the tree.",
    )
    parser.add_argument("root", help="CAMSDD_ROOT, or a folder that holds CamSDD/ or CamSDD.zip")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scan = camsdd_layout.scan_camsdd(camsdd_layout.find_root_or_archive(args.root))
    print(scan.summary())
    for warning in scan.count_warnings():
        print(f"  warning: {warning}")
    camsdd_layout.check_buildable(scan)  # exits 2 where the build would refuse the tree
    return 0

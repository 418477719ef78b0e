"""``camsdd report --work W``: rewrites ``W/report.html`` from what the stages wrote."""

from __future__ import annotations

import argparse

from pipeline.cli import common
from pipeline.core.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        description="Writes W/report.html, one self-contained page: the funnel of kept and "
        "dropped candidates per stage and reason, pseudo-labels per class with thresholds "
        "and plots, duplicates and leaks as thumbnail pairs, the official images' label "
        "issues, the student (ablation, confusion matrices, latency, size), links to the "
        "FiftyOne views, and the run's config, versions and times.",
    )
    common.add_work_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.cli import run as run_cli
    from pipeline.cli import run_config
    from pipeline.reports import run_report
    from pipeline.store import workdir

    if not workdir.exists(args.work):
        raise UserError(f"--work {args.work}: no such work directory")
    state = run_cli.load_state(args.work)
    config = None
    if state.get("config"):
        try:
            config = run_config.load(state["config"])
        except run_config.ConfigError:
            config = None  # the config changed or moved since: the report goes on without it
    print(run_report.write(args.work, state, config))
    return 0

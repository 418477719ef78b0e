"""The ``camsdd`` command: one entry point, one subcommand per stage.

Each stage module adds its subcommand through ``add_parser(subparsers)`` and
sets ``func``; every stage works in the same ``--work`` directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pipeline import quiet

quiet.quiet_environment()  # before anything below can load TensorFlow

from pipeline import (  # noqa: E402
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
from pipeline.errors import UserError  # noqa: E402


def _check(args: argparse.Namespace) -> int:
    scan = camsdd_layout.scan_camsdd(camsdd_layout.find_root_or_archive(args.root))
    print(scan.summary())
    for warning in scan.count_warnings():
        print(f"  warning: {warning}")
    camsdd_layout.check_buildable(scan)  # exits 2 where the build would refuse the tree
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


#: Commands that load TensorFlow: it is imported first, with its load-time chatter held back.
TENSORFLOW_COMMANDS = frozenset({"embed", "train", "quantize", "evaluate", "ablate", "demo"})


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
    quiet.quiet_environment()
    quiet.quiet_python_logs()
    parser = build_parser()
    # Beam stages pass unknown --flags on as pipeline options (--runner, Dataflow's …).
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_beam_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    try:
        if args.command in TENSORFLOW_COMMANDS:
            quiet.import_tensorflow_quietly()
        return args.func(args)
    except BaseException as raised:  # noqa: BLE001  (sorted below; the rest re-raised)
        code = _exit_code(raised, args.command)
        if code is None:
            raise
        return code


def _exit_code(raised: BaseException, command: str) -> int | None:
    """The exit code for a user's mistake or interrupt (one line said); None: a bug."""
    # Beam re-raises what a transform raised inside its own exception: look through it.
    chain, seen = [raised], raised
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__
        chain.append(seen)
    if any(isinstance(e, KeyboardInterrupt) for e in chain) or (
        isinstance(raised, RuntimeError) and "KeyboardInterrupt [while running" in str(raised)
    ):
        print(
            f"interrupted: camsdd {command} stopped; earlier results are unchanged",
            file=sys.stderr,
        )
        return 130
    if any(isinstance(e, BrokenPipeError) for e in chain):
        # Output piped into a reader that has left (`| head`): nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    user = next((e for e in chain if isinstance(e, UserError)), None)
    if user is None and isinstance(raised, (FileNotFoundError, NotADirectoryError, ValueError)):
        user = raised
    if user is not None:
        print(f"error: {user}", file=sys.stderr)
        return 2
    if isinstance(raised, OSError):  # an unwritable work dir, a full disk: name the file
        where = f" ({raised.filename})" if raised.filename else ""
        print(f"error: {raised.strerror or raised}{where}", file=sys.stderr)
        return 2
    return None


if __name__ == "__main__":
    sys.exit(main())

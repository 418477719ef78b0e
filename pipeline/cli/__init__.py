"""The ``camsdd`` command: one entry point, one subcommand per stage.

Each subcommand lives in ``pipeline.cli.<command>`` (argparse only) and is imported
when it is dispatched, so ``camsdd check`` starts without loading Beam or
TensorFlow. Errors a user can fix (``UserError`` and its kin) print one line and
exit 2; Ctrl-C prints one line and exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pipeline import __version__
from pipeline.core import quiet
from pipeline.core.errors import UserError

#: command -> (module, one-line help), in the order ``camsdd --help`` lists them.
COMMANDS = {
    "demo": ("demo", "camsdd run on the embedded demo data (its config ships in the package)"),
    "run": ("run", "every stage from one TOML config, resuming; ends with W/report.html"),
    "report": ("report", "(re)write W/report.html: the whole run on one page"),
    "check": ("check", "check a CamSDD folder before building: splits, class folders, counts"),
    "crawl": ("crawl", "find candidate images per class (URLs + license + author, no bytes)"),
    "fetch": ("fetch", "download, validate, filter and resize crawled candidates (Apache Beam)"),
    "embed": (
        "embed",
        "teacher embeddings of kept candidates and labeled images, cached (Apache Beam)",
    ),
    "dedup": (
        "dedup",
        "drop exact and near duplicates, and leaks of labeled images (Apache Beam)",
    ),
    "pseudolabel": (
        "pseudolabel",
        "K-fold teacher heads: keep confident, agreeing candidates (Apache Beam)",
    ),
    "train": ("train", "train the mobile student on camsdd (train or train+extra_pseudo)"),
    "quantize": (
        "quantize",
        "full-INT8 TFLite (uint8 in/out) of a trained student, checked and compared",
    ),
    "evaluate": (
        "evaluate",
        "evaluate a .tflite student: top-1/top-3, per class, latency, size, score",
    ),
    "ablate": (
        "ablate",
        "train, quantize and evaluate the student with and without extra_pseudo",
    ),
    "review": (
        "review",
        "review labels in FiftyOne (App on 127.0.0.1); `review export` writes the corrections",
    ),
}
#: Commands that load TensorFlow: it is imported first, with its load-time chatter held back.
TENSORFLOW_COMMANDS = frozenset({"embed", "train", "quantize", "evaluate", "ablate", "demo", "run"})


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and finds its devices, with their native log lines held back.

    Finding the devices is when a machine without a GPU logs its ``cuInit`` error.
    """
    if "tensorflow" in sys.modules:
        return
    with quiet.native_output_captured():
        import tensorflow

        tensorflow.config.list_physical_devices()


def command_module(command: str):
    """The module of one subcommand (imported now)."""
    return importlib.import_module(f"pipeline.cli.{COMMANDS[command][0]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported, the others are listed by name."""
    parser = argparse.ArgumentParser(
        prog="camsdd",
        description="Grow CamSDD with crawled, pseudo-labeled images; build it with "
        "`tfds build camsdd --imports tfds_camsdd`.",
    )
    parser.add_argument("--version", action="version", version=f"camsdd {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        if name == command:
            command_module(name).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    words = [a for a in argv if not a.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    quiet.quiet_environment()
    quiet.quiet_python_logs()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(argv))
    # Beam stages pass unknown --flags on as pipeline options (--runner, Dataflow's …).
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_beam_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    try:
        if args.command in TENSORFLOW_COMMANDS:
            import_tensorflow_quietly()
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

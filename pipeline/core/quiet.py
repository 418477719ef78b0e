"""Logs for people: what libraries print to a log that nobody asked for, kept out of it.

TensorFlow's native libraries write C++ log lines (``I0000 …``, the absl banner, a
``cuInit`` error on machines without a GPU) to file descriptor 2 when they load, before
any Python setting applies; the TFLite converter and LiteRT print to the raw file
descriptors too. ``native_output_captured`` holds such output back and shows it only
when the block fails; ``quiet_environment`` sets what must be set before TensorFlow
loads; ``quiet_python_logs`` drops Beam's warnings that say nothing to a user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

from pipeline.core import errors

#: Set before TensorFlow loads (inherited by Beam workers and the tfds subprocess).
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}
#: Python log messages that are noise here (Beam's and absl's). Beam also logs an
#: interrupted bundle with its traceback: the command says "interrupted" once instead.
_NOISE = (
    "Using yield and return in the process method",
    "Resource module is not available",
    "is not a valid hostname",
    "KeyboardInterrupt",
)


#: A line of native (C++) logging, as TensorFlow's libraries print them.
NATIVE_LOG_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} \d\d:\d\d:\d\d"
    r"|To enable the following instructions: |INFO: Created TensorFlow Lite)"
)


def people_lines(stream) -> Iterator[str]:
    """The lines of a child's output meant for people (native log lines dropped)."""
    for line in stream:
        if not NATIVE_LOG_LINE.match(line):
            yield line


def quiet_environment() -> None:
    """Environment variables that keep native libraries quiet; the user's own values win."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def _user_error_in(raised: BaseException | None) -> bool:
    from pipeline.core.errors import UserError

    while raised is not None:
        if isinstance(raised, UserError):
            return True
        raised = raised.__cause__ or raised.__context__
    return False


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            return False
        # A user's error raised inside a Beam transform: Beam logs it with its traceback,
        # then the command prints it as one line (cli.main).
        if record.exc_info and _user_error_in(record.exc_info[1]):
            return False
        # A write the work dir refused (full disk …): the stage says it in one line.
        if record.exc_info and errors.refused_write(record.exc_info[1]) is not None:
            return False
        return not any(text in message for text in _NOISE)


def quiet_python_logs() -> None:
    """One stderr handler for Python logging, warnings and up, with known noise dropped.

    Installed first, so libraries that call ``logging.basicConfig`` later (Beam does)
    leave it in place; a filter on a handler sees every logger's records.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    for handler in root.handlers:
        handler.addFilter(_DropNoise())


@contextlib.contextmanager
def native_output_captured() -> Iterator[None]:
    """File descriptors 1 and 2 go to a temporary file inside the block.

    If the block raises, what was captured is written to stderr first, so nothing
    that explains a failure is lost; otherwise it is dropped.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as sink:
        for fd in (1, 2):
            os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            _restore(saved)
            sink.seek(0)
            captured = sink.read().decode(errors="replace")
            if captured.strip():
                sys.stderr.write(captured)
            raise
        else:
            _restore(saved)


def _restore(saved: dict[int, int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in saved.items():
        os.dup2(copy, fd)
        os.close(copy)
    saved.clear()

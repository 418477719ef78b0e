"""The work directory ``W``: where every stage keeps its files, local or ``gs://``.

Paths that stages write into manifests are relative to ``W``
(``fetch/images/ab/<sha256>.jpg``) and are resolved against it when read, so a work
dir works from any current folder, can be moved, and behaves the same on ``gs://``.
Paths outside ``W`` (a folder source's files, a CAMSDD root) are stored absolute.

A stage that writes into ``W`` holds its lock (``W/<stage>/.lock``) for the whole run:
a second run of the same stage on the same work dir refuses at once instead of
racing the first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import Iterator

from apache_beam.io.filesystems import FileSystems

from pipeline.core import errors
from pipeline.core.errors import UserError


class WorkDirError(UserError, RuntimeError):
    """The work dir cannot be used as asked (locked, unwritable …); the message says why."""


def is_remote(path: str) -> bool:
    """``gs://…`` and other URL-style paths (anything with a scheme)."""
    return "://" in path


def absolute(work: str) -> str:
    """``work`` made absolute (local paths); URLs unchanged; no trailing slash."""
    work = os.fspath(work)
    if is_remote(work):
        return work.rstrip("/")
    return os.path.abspath(os.path.expanduser(work))


def resolve(work: str, path: str | None) -> str | None:
    """A manifest path made usable: relative paths are relative to ``work``."""
    if not path:
        return path
    if is_remote(path) or os.path.isabs(path):
        return path
    return FileSystems.join(work, path)


def match(pattern: str) -> list[str]:
    """Sorted paths matching a glob, local or ``gs://`` (none: an empty list)."""
    return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)


def write_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to a temporary name beside ``path``, then renames it over ``path``.

    Readers see the old file or the new one, never half of one; a crash leaves a
    hidden ``.<name>.tmp-*`` file, never a damaged ``path``. The one writer of the work
    dir: manifests, reports, crawl pages and the image store all go through it.
    """
    directory, name = path.rsplit("/", 1)
    temporary = FileSystems.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    with FileSystems.create(temporary) as handle:
        handle.write(data)
    try:
        FileSystems.rename([temporary], [path])
    except Exception:
        with contextlib.suppress(Exception):
            FileSystems.delete([temporary])
        raise


def unwritable(path: str, error: BaseException) -> WorkDirError:
    """The error that stops a run when the work dir cannot take a write (full, read-only)."""
    reason = None
    seen: BaseException | None = error
    while seen is not None and reason is None:  # Beam's FileSystems wraps the OSError
        if isinstance(seen, OSError) and seen.strerror:
            reason = seen.strerror
        seen = seen.__cause__ or seen.__context__
    reason = reason or (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return WorkDirError(
        f"cannot write {path} ({reason}): the run stopped and the previous manifest is "
        "unchanged; free space or fix the work dir, then run again (finished work is kept)"
    )


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def relative(work: str, path: str) -> str:
    """``path`` relative to ``work`` when it lies inside it, else ``path`` unchanged."""
    prefix = work.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


# ------------------------------------------------------------------ the stage lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict) -> str:
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
        if holder
        else "another process"
    )


@contextlib.contextmanager
def stage_lock(work: str, stage: str, name: str | None = None) -> Iterator[None]:
    """Holds ``W/<stage>/.lock`` (``.lock-<name>``) while a stage runs; a second holder
    gets WorkDirError.

    Local work dirs use ``flock``: the kernel drops the lock when its process dies, so a
    killed run never leaves it stuck. On ``gs://`` the lock is a small object naming its
    holder, created atomically (a GCS generation precondition: of two runs starting at
    once, one gets it); one left by a dead process on this host is taken over, one from
    another host must be deleted by hand (the message says which file).
    """
    directory = FileSystems.join(work, stage)
    path = FileSystems.join(directory, f".lock-{name}" if name else ".lock")
    command = f"camsdd {stage}" + (f" --name {name}" if name else "")
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "stage": stage,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if is_remote(work):
        with _remote_lock(path, command, me):
            yield
        return
    import fcntl

    try:
        os.makedirs(directory, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115  (held for the whole run)
    except OSError as error:
        raise WorkDirError(f"cannot write to {directory}: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            raise WorkDirError(
                f"another `{command}` is running on this work dir ({_describe(holder)}); "
                f"wait for it to finish (lock: {path})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(me))
        handle.flush()
        yield
    finally:
        handle.close()


class _GcsObject:
    """One ``gs://`` object written and deleted under GCS generation preconditions.

    ``create`` succeeds for one writer only (``ifGenerationMatch=0``: the object must
    not exist), ``replace`` only if nobody rewrote it since it was read; GCS checks
    both atomically, so two runs racing for a lock cannot both get it.
    """

    def __init__(self, path: str):
        from apache_beam.io.gcp import gcsio

        bucket, name = path[len("gs://") :].split("/", 1)
        self.blob = gcsio.GcsIO().client.bucket(bucket).blob(name)

    def _write(self, data: bytes, generation: int) -> int | None:
        from google.api_core import exceptions

        try:
            self.blob.upload_from_string(data, if_generation_match=generation)
        except exceptions.PreconditionFailed:
            return None
        return self.blob.generation

    def create(self, data: bytes) -> int | None:
        """The new object's generation, or None if the object exists."""
        return self._write(data, 0)

    def replace(self, data: bytes, generation: int) -> int | None:
        """The new generation, or None if the object is no longer at ``generation``."""
        return self._write(data, generation)

    def read(self) -> tuple[bytes, int] | None:
        from google.api_core import exceptions

        try:
            return self.blob.download_as_bytes(), self.blob.generation
        except exceptions.NotFound:
            return None

    def delete(self, generation: int) -> None:
        """Deletes the object if it is still at ``generation`` (still ours)."""
        from google.api_core import exceptions

        with contextlib.suppress(exceptions.NotFound, exceptions.PreconditionFailed):
            self.blob.delete(if_generation_match=generation)


@contextlib.contextmanager
def _remote_lock(path: str, command: str, me: dict) -> Iterator[None]:
    """On ``gs://``: created only if absent, taken over only if unchanged since read
    (GCS preconditions, atomic). Other remote schemes: check, then write (two runs
    starting within the same moment could both pass the check)."""
    data = json.dumps(me).encode()
    if not path.startswith("gs://"):
        with _checked_then_written(path, command, me, data):
            yield
        return
    lock = _GcsObject(path)
    generation = lock.create(data)
    while generation is None:  # held: by a live run, or left by a dead one
        found = lock.read()
        if found is None:  # released meanwhile
            generation = lock.create(data)
            continue
        holder = _holder(found[0])
        if not _stale(holder, me):
            raise _held(path, command, holder)
        generation = lock.replace(data, found[1])
        if generation is None:
            continue  # another run took it over first: read again
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            lock.delete(generation)


def _held(path: str, command: str, holder: dict) -> WorkDirError:
    return WorkDirError(
        f"another `{command}` holds {path} ({_describe(holder)}); if that run "
        "is dead, delete the file and start again"
    )


def _holder(data: bytes) -> dict:
    try:
        return json.loads(data.decode() or "{}")
    except ValueError:
        return {}


def _stale(holder: dict, me: dict) -> bool:
    """A lock left by a dead process of this host."""
    return holder.get("host") == me["host"] and not _alive(int(holder.get("pid", 0)))


@contextlib.contextmanager
def _checked_then_written(path: str, command: str, me: dict, data: bytes) -> Iterator[None]:
    if FileSystems.exists(path):
        with FileSystems.open(path) as handle:
            holder = _holder(handle.read())
        if not _stale(holder, me):
            raise _held(path, command, holder)
    with FileSystems.create(path) as handle:
        handle.write(data)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            FileSystems.delete([path])


def remove_beam_temp(work: str, stage: str) -> int:
    """Deletes ``W/<stage>/beam-temp-*``: what an interrupted Beam write leaves behind.

    Called under the stage lock, so no live run owns them. Returns how many went.
    """
    pattern = FileSystems.join(work, stage, "beam-temp-*")
    found = match(pattern)
    folders = sorted({_temp_folder(work, stage, path) for path in found})
    if is_remote(work):
        if found:
            FileSystems.delete(found)
        return len(folders)
    import shutil

    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    # Empty temp folders match nothing above: list the stage folder itself.
    stage_dir = FileSystems.join(work, stage)
    if os.path.isdir(stage_dir):
        for entry in os.listdir(stage_dir):
            if entry.startswith("beam-temp-"):
                shutil.rmtree(os.path.join(stage_dir, entry), ignore_errors=True)
                folders.append(entry)
    return len(set(folders))


def _temp_folder(work: str, stage: str, path: str) -> str:
    prefix = FileSystems.join(work, stage) + "/"
    return prefix + path[len(prefix) :].split("/", 1)[0]


def refused_write(error: BaseException) -> OSError | None:
    """The OSError of a refused write behind ``error``, or None (also when a WorkDirError
    already says it)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, WorkDirError):
            return None
        seen = seen.__cause__ or seen.__context__
    return errors.refused_write(error)


@contextlib.contextmanager
def stage_run(work: str, stage: str) -> Iterator[None]:
    """The stage lock, with leftovers of interrupted runs removed on entry and on exit.

    A write the work dir refuses anywhere in the run (a Beam sink's file, a report)
    stops it with the one-line ``unwritable`` error, as the stage's own writes do. A
    stage replaces its previous manifest only after the new one is complete, so that
    manifest is still there.
    """
    with stage_lock(work, stage):
        remove_beam_temp(work, stage)
        try:
            yield
        except Exception as error:
            refused = refused_write(error)
            if refused is None:
                raise
            path = refused.filename or FileSystems.join(work, stage)
            raise unwritable(os.fspath(path), refused) from error
        finally:
            with contextlib.suppress(Exception):  # a full disk must not hide the error
                remove_beam_temp(work, stage)

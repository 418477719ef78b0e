"""The two error shapes of this project.

* ``RecordError``: one record cannot go on, for a stated reason. Stages catch it, record
  ``reason`` in the manifest and move on; a pipeline never dies on one bad record.
* ``UserError``: the command cannot run as asked (a bad option, a missing or damaged
  input, a locked work dir). The ``camsdd`` command prints its message as one line and
  exits 2, with no traceback, before anything is overwritten.
"""

from __future__ import annotations

import errno


class RecordError(Exception):
    """A record that cannot go on, for a stated reason.

    ``reason`` is a short stable code for manifests and counters (``corrupt``,
    ``http_404``, ``too_small`` …); ``detail`` is the human-readable rest.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class UserError(Exception):
    """A command that cannot run as asked; the message names the file or option."""


#: errno of a write the storage refused: full disk or quota, file too large (a size
#: limit), read-only file system, no permission.
REFUSED_WRITES = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)


def refused_write(error: BaseException | None) -> OSError | None:
    """The OSError of a refused write behind ``error`` (through the exceptions Beam
    wraps a DoFn's in), or None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in REFUSED_WRITES:
            return error
        error = error.__cause__ or error.__context__
    return None

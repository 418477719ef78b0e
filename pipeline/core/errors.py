"""The two error shapes of this project.

* ``RecordError``: one record cannot go on, for a stated reason. Stages catch it, record
  ``reason`` in the manifest and move on; a pipeline never dies on one bad record.
* ``UserError``: the command cannot run as asked (a bad option, a missing or damaged
  input, a locked work dir). The ``camsdd`` command prints its message as one line and
  exits 2, with no traceback, before anything is overwritten.
"""

from __future__ import annotations


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

"""The one exception shape every stage records: a short reason code and a detail."""

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

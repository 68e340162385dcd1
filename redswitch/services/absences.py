"""How long something has been missing, over successive looks at FreeSWITCH.

FreeSWITCH's channel list trails its channels, and a call that is just starting has legs it does not list yet:
one look that lacks a leg proves nothing. The listener's recovery and the scheduler's reconciler both call a leg
gone (or an answer missed) only once looks far enough apart all lacked it; this keeps those first sightings.
"""

from __future__ import annotations


class Absences:
    """When each key was first found missing, in the looks since; a key a look does not find missing is
    forgotten when that look ends (it came back, or is no longer asked about)."""

    def __init__(self) -> None:
        self._first: dict[str, float] = {}
        self._noted: set[str] = set()

    def missing_for(self, key: str, now: float) -> float:
        """Note ``key`` missing in this look (at ``now``, monotonic); seconds since a look first found it missing."""
        self._noted.add(key)
        return now - self._first.setdefault(key, now)

    def end_look(self) -> None:
        """Forget the keys this look did not note."""
        self._first = {key: first for key, first in self._first.items() if key in self._noted}
        self._noted = set()

    def clear(self) -> None:
        self._first, self._noted = {}, set()

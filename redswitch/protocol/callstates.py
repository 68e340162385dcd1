"""FreeSWITCH's call states (``Channel-Call-State``, ``show channels``' ``callstate``), as far as Redswitch reads them.

Only an answered channel is ever ``ACTIVE``, ``HELD``, ``UNHELD`` or ``RING_WAIT`` (switch_channel.c: ``RING_WAIT`` is
set when an answered channel starts an originate, e.g. side 0 while its ``bridge`` rings side 1; the hold states
only with ``CF_ANSWERED``). ``RINGING``, ``EARLY`` and ``DOWN`` are not answered yet; ``HANGUP`` is over.
"""

from __future__ import annotations

#: The call states of an answered, live channel.
ANSWERED = frozenset(("ACTIVE", "HELD", "UNHELD", "RING_WAIT"))

"""Which listener follows which FreeSWITCH node: membership, an even assignment, and a lease per node.

Any number of ``redswitch listen`` processes may run. Each says it is alive in ``redswitch:listeners`` (every third
of ``LISTENER_LEASE``); every listener computes the same assignment from the live ones (:func:`assign`: the nodes in
``ESL_NODES`` order dealt round the listeners in sorted order, so each follows ⌊n/l⌋ or ⌈n/l⌉ nodes), takes the
leases of its own nodes when they are free and gives up the others. A lease is exclusive and fenced: its value is a
token drawn afresh at each take, and every write a listener makes for a node carries it (the events script refuses
a batch whose token is not the node's lease any more). A listener that is killed stops renewing: its membership and
its leases expire after ``LISTENER_LEASE`` and the others take its nodes over; a listener that joins or leaves
(cleanly) makes the nodes move at the next renewal.
"""

from __future__ import annotations

from collections.abc import Sequence


def assign(nodes: Sequence[str], live: Sequence[str]) -> dict[str, str]:
    """node -> the listener that should follow it: nodes dealt in turn to the live listeners, sorted (pure)."""
    if not live:
        return {}
    order = sorted(live)
    return {node: order[index % len(order)] for index, node in enumerate(nodes)}

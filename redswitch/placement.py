"""Which FreeSWITCH node takes a new call, and which node holds each call.

Each node has a set of the dial_ids it holds (``Keys.node_calls``): added when the node accepts
the originate, removed when the call ends. A new call goes to the healthy node holding the fewest calls;
equal nodes take turns (a shared counter). A node that refused a connection is marked down for
``NODE_RETRY_AFTER`` seconds and only tried when no other node is left, so a down node delays no job.
With a single node there is nothing to choose and no Redis round trip is made.
"""

from __future__ import annotations

from redswitch.config import EslNode, Settings
from redswitch.store import CallStore


class Nodes:
    def __init__(self, store: CallStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.all = settings.nodes()

    def in_order(self) -> list[EslNode]:
        """Nodes in the order to try them: healthy ones by fewest calls (ties take turns), then down ones."""
        if len(self.all) == 1:
            return list(self.all)
        calls, down, turn = self.store.node_load([node.name for node in self.all])
        count = len(self.all)

        def rank(index: int) -> tuple[bool, int, int]:
            return down[index], calls[index], (index - turn) % count

        return [self.all[index] for index in sorted(range(count), key=rank)]

    def mark_down(self, node: EslNode) -> None:
        if len(self.all) > 1:
            self.store.mark_node_down(node.name, int(self.settings.node_retry_after * 1000))

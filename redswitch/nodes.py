"""Which FreeSWITCH node takes a new call, and which node holds each call.

Each node has a set of the dial_ids it holds (``redswitch:node-calls:<node>``): added when the node accepts
the originate, removed when the call ends. A new call goes to the healthy node holding the fewest calls;
equal nodes take turns (a shared counter). A node that refused a connection is marked down for
``NODE_RETRY_AFTER`` seconds and only tried when no other node is left, so a down node delays no job.
With a single node there is nothing to choose and no Redis round trip is made.
"""

from __future__ import annotations

import redis

from redswitch.config import EslNode, Settings


def calls_key(node: str) -> str:
    return f"redswitch:node-calls:{node}"


def down_key(node: str) -> str:
    return f"redswitch:node-down:{node}"


ROUND_ROBIN_KEY = "redswitch:node-turn"


class Nodes:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.all = settings.nodes()

    def in_order(self) -> list[EslNode]:
        """Nodes in the order to try them: healthy ones by fewest calls (ties take turns), then down ones."""
        if len(self.all) == 1:
            return list(self.all)
        pipe = self.client.pipeline(transaction=False)
        for node in self.all:
            pipe.scard(calls_key(node.name))
            pipe.exists(down_key(node.name))
        pipe.incr(ROUND_ROBIN_KEY)
        *answers, turn = pipe.execute()
        count = len(self.all)

        def rank(index: int) -> tuple[int, int, int]:
            calls, down = int(answers[2 * index]), int(answers[2 * index + 1])
            return down, calls, (index - int(turn)) % count

        return [self.all[index] for index in sorted(range(count), key=rank)]

    def mark_down(self, node: EslNode) -> None:
        if len(self.all) > 1:
            self.client.set(down_key(node.name), "1", px=int(self.settings.node_retry_after * 1000))

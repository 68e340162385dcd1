"""State writes that ride on the round trip of the message's ack, when the broker's Redis holds the state too.

An actor run ends with two writes to the same Redis: its last state change (``sent``, after the originate) and
Dramatiq's ack. Each round trip costs both processes a send, a receive and a poll or two; on a loaded 2-core
machine that is what bounds intake. When the broker is a :class:`~redswitch.broker.waking.WakingRedisBroker` on
the state's Redis (``BROKER_URL`` unset, the default), the actor hands the write to the message and the consumer
pipelines it just before the ack. Anywhere else (a StubBroker, RabbitMQ, a separate broker Redis, no current
message) the write runs at once, as before.

Ordering is what it was: the write lands before the ack, and a worker killed in between leaves the write undone
and the message unacked, so the message runs again and finds the state as it would have before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dramatiq
import redis
from dramatiq.middleware import CurrentMessage

if TYPE_CHECKING:  # the broker is set up before prometheus_client is imported (redswitch.broker)
    from redswitch.store import StoreWrite


#: The attribute of the message proxy holding its writes (the consumer's ack reads it).
ATTRIBUTE = "redswitch_ack_writes"


def write_with_ack(client: redis.Redis, write: StoreWrite) -> None:
    """Run ``write`` on the current message's ack round trip if the broker can carry it; otherwise now."""
    message = CurrentMessage.get_current_message()
    carried = write.stageable and getattr(dramatiq.get_broker(), "carries_state_writes", False)
    if message is None or not carried:
        write.run(client)
        return
    pending = getattr(message, ATTRIBUTE, None)
    if pending is None:
        setattr(message, ATTRIBUTE, pending := [])
    pending.append(write)


def pending_writes(message: Any) -> list[StoreWrite]:
    return list(getattr(message, ATTRIBUTE, None) or [])

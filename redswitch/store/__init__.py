"""Redis state: one interface for every change Redswitch makes, and where each key lives.

``open_store(client, settings)`` gives the :class:`CallStore` for the Redis ``client`` talks to: atomic on a
single Redis, ordered on a Redis Cluster. Key and channel names are in :mod:`redswitch.store.keys`, the events in
:mod:`redswitch.store.events`, the Lua scripts in ``redswitch/store/lua/``.
"""

from __future__ import annotations

import redis

from redswitch.config import Settings
from redswitch.store import events
from redswitch.store.atomic import AtomicStore
from redswitch.store.base import (
    BARGER_FIELDS,
    GO,
    LEG_FIELDS,
    Batch,
    CallStore,
    ChannelChange,
    Decision,
    Fence,
    JobCall,
    Limit,
    NodeLease,
    StoreWrite,
    leg_uuids,
)
from redswitch.store.cluster import ClusterStore
from redswitch.store.connection import is_cluster_client
from redswitch.store.keys import ACTIVE_TTL, CALL_TTL, HISTORY_TTL, Keys

__all__ = [
    "ACTIVE_TTL",
    "BARGER_FIELDS",
    "CALL_TTL",
    "GO",
    "HISTORY_TTL",
    "LEG_FIELDS",
    "Batch",
    "CallStore",
    "ChannelChange",
    "Decision",
    "Fence",
    "JobCall",
    "Keys",
    "Limit",
    "NodeLease",
    "StoreWrite",
    "events",
    "leg_uuids",
    "open_store",
]


def open_store(client: redis.Redis, settings: Settings) -> CallStore:
    """The store for ``client``: the one place that tells a single Redis from a cluster."""
    cluster = is_cluster_client(client)
    keys = Keys(settings, cluster=cluster)
    return ClusterStore(client, settings, keys) if cluster else AtomicStore(client, settings, keys)

"""A take-over's recovery when the switch's channel listing lags its channels, as FreeSWITCH's does.

``show channels`` reads FreeSWITCH's core database, which trails the live channels (about 0.15 s on an idle
FreeSWITCH 1.11 built here, more under load). Seen on the real switch: a call placed while its node's listener was
re-taking its lease answered in that window, the one listing taken at the take-over did not show it answered yet,
and the call's answers were never published. The simulator models the lag (``Scenario.channels_lag``); the
listener lists the channels again after connecting (``RECHECKS``) and calls a leg gone only when listings
``GONE_AFTER`` apart both lack it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redswitch.config import EslNode, Settings
from redswitch.esl.client import EslClient
from redswitch.services.listener import GONE_AFTER, RECOVERED_ANSWER, Listener
from redswitch.simulator import Scenario, Simulator
from redswitch.store import Fence, open_store
from redswitch.store.connection import redis_from_settings
from tests.conftest import close_pubsubs_now
from tests.servers import RedisServer

LAG = 0.6
NODE = "fs1"


@pytest.fixture
def lagging() -> Iterator[Simulator]:
    sim = Simulator(host="127.0.0.1", port=0, scenario=Scenario.default().with_changes(channels_lag=LAG)).start()
    yield sim
    sim.stop()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    redis_server.client().flushall()
    made = redis_from_settings(Settings(pubsub_redis_url=redis_server.url))
    yield made
    close_pubsubs_now()
    made.close()


def listed(sim: Simulator) -> dict[str, str]:
    esl = EslClient("127.0.0.1", sim.port, "ClueCon")
    try:
        rows: list[dict[str, Any]] = json.loads(esl.api("show channels as json")).get("rows") or []
        return {row["uuid"]: row["callstate"] for row in rows}
    finally:
        esl.close()


def test_the_simulators_listing_lags_its_channels_as_freeswitchs_core_database_does(lagging: Simulator) -> None:
    esl = EslClient("127.0.0.1", lagging.port, "ClueCon")
    leg = str(uuid.uuid4())
    try:
        assert esl.api(f"originate {{origination_uuid={leg}}}sofia/gateway/gw/15105550100 &park()").startswith("+OK")
    finally:
        esl.close()
    assert lagging.channels()[leg].answered  # live: answered
    assert leg not in listed(lagging)  # the database has not caught up yet
    time.sleep(LAG + 0.1)
    assert listed(lagging)[leg] == "ACTIVE"


def test_a_call_answered_just_before_a_take_over_is_recovered_and_a_young_leg_is_not_called_gone(
    lagging: Simulator, client: redis.Redis, redis_server: RedisServer
) -> None:
    settings = Settings(pubsub_redis_url=redis_server.url, esl_nodes=f"{NODE}=127.0.0.1:{lagging.port}")
    store = open_store(client, settings)
    dial_id, uuid0, uuid1 = "lag_1", str(uuid.uuid4()), str(uuid.uuid4())
    record = {"org_id": "org", "user_id": "u1", "state": "dialling", "node": NODE, "uuid0": uuid0, "uuid1": uuid1}
    store.claim(dial_id, "org", "u1", {**record, "job_uuid": "job-lag-1"})
    store.sent(dial_id, NODE).run(client)
    client.hset(f"redswitch:call:{dial_id}", "seen", "1")
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(dial_id)
    # the call is placed and answered on both sides while no listener follows the node
    esl = EslClient("127.0.0.1", lagging.port, "ClueCon")
    try:
        side1 = f"{{origination_uuid={uuid1},redswitch_dial_id={dial_id},redswitch_side=1}}sofia/gateway/gw/15105550101"
        side0 = f"{{origination_uuid={uuid0},redswitch_dial_id={dial_id},redswitch_side=0}}sofia/gateway/gw/15105550100"
        assert esl.api(f"originate {side0} &bridge({side1})").startswith("+OK")
    finally:
        esl.close()
    deadline = time.monotonic() + 2.0
    while not lagging.channels()[uuid1].answered and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lagging.channels()[uuid1].answered
    # a listener takes the node over at once: its first listing shows neither leg
    fence = Fence(NODE, store.hold_node(NODE, "new", 30_000))
    listener = Listener(settings, client, lambda job, delay: None)
    stop = threading.Event()
    started = time.monotonic()
    follower = threading.Thread(
        target=listener.follow, args=(EslNode(NODE, "127.0.0.1", lagging.port, "ClueCon"), stop, fence)
    )
    follower.start()
    heard: list[tuple[float, dict[str, Any]]] = []
    try:
        deadline = started + 3 * LAG + 3.0
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                heard.append((time.monotonic() - started, json.loads(message["data"])))
    finally:
        stop.set()
        follower.join(10)
        pubsub.close()
    answers = [(at, event) for at, event in heard if event["type"] == "answer-event"]
    assert sorted(event["side"] for _, event in answers) == ["0", "1"], heard
    assert all(event["reason"] == RECOVERED_ANSWER for _, event in answers)
    assert min(at for at, _ in answers) >= GONE_AFTER * 0.9  # from a later listing: the first could not show them
    # the first listing lacked both legs, yet nothing was called gone: the call is up, and no hangup was announced
    assert not [event for _, event in heard if event["type"] == "hangup-event"], heard
    assert store.is_active(dial_id)

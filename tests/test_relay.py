"""The control relay on a real Redis: ownership (a script call per message unless ownership cannot have moved), the
control log every relay notes a message in, and the fallback of a relay that does not own the call."""

from __future__ import annotations

import json
import time

import redis

from redswitch.config import Settings
from redswitch.messages import CONTROL_ID
from redswitch.services.relay import Relay
from redswitch.store import Keys, open_store
from tests.servers import RedisServer


def script_calls(client: redis.Redis) -> int:
    """EVALSHA/EVAL calls so far."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(stats.get("cmdstat_eval", {}).get("calls", 0))


def make_relay(
    server: RedisServer, bridge_id: str, alive: list[bool], fallback_after: float = 1.0
) -> tuple[Relay, list[tuple[str, dict[str, str]]]]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    forwarded: list[tuple[str, dict[str, str]]] = []
    store = open_store(client, Settings(pubsub_redis_url=server.url))
    relay = Relay(
        client,
        store,
        bridge_id,
        lambda actor, dial, msg: forwarded.append((dial, msg)),
        lambda: alive[0],
        fallback_after=fallback_after,
    )
    relay.since_ms = int(client.time()[0]) * 1000 - 1000
    return relay, forwarded


def start_call(server: RedisServer, dial_id: str) -> None:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    record = {"org_id": "org", "user_id": dial_id, "job_uuid": f"job-{dial_id}", "state": "sent"}
    open_store(client, Settings(pubsub_redis_url=server.url)).claim(dial_id, "org", dial_id, record)


def test_while_our_bridge_is_surely_alive_an_owned_call_needs_no_ownership_check(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    redis_client.set(Keys.bridge_alive("r1"), "1")
    for dial in ("warm", "own1"):
        start_call(redis_server, dial)
    relay, forwarded = make_relay(redis_server, "r1", [True])
    whisper = json.dumps({"type": "whisper"})
    relay.on_message("warm", whisper)  # Redis now knows the scripts
    # The first message of a call takes ownership (one script) and is noted in the call's log (one script)
    before = script_calls(redis_client)
    relay.on_message("own1", whisper)
    assert script_calls(redis_client) == before + 2
    # Later ones, while our liveness key cannot have expired, are only noted
    relay.on_message("own1", whisper)
    relay.on_message("own1", whisper)
    assert script_calls(redis_client) == before + 4
    assert [dial for dial, _ in forwarded] == ["warm", "own1", "own1", "own1"]
    ids = [message[CONTROL_ID] for dial, message in forwarded if dial == "own1"]
    digest = ids[0].partition(":")[0]
    assert ids == [f"{digest}:1", f"{digest}:2", f"{digest}:3"]


def test_once_our_liveness_is_in_doubt_ownership_is_checked_again_and_a_new_owner_wins(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    start_call(redis_server, "own2")
    alive = [True]
    relay, forwarded = make_relay(redis_server, "r2", alive)
    redis_client.set(Keys.bridge_alive("r2"), "1")
    relay.on_message("own2", json.dumps({"type": "mute"}))
    # When our heartbeat lapsed and another live bridge took the call over
    alive[0] = False
    redis_client.delete(Keys.bridge_alive("r2"))
    redis_client.set(Keys.bridge_alive("r3"), "1")
    redis_client.set(Keys.relay_owner("own2"), "r3")
    relay.on_message("own2", json.dumps({"type": "mute"}))
    # Then we asked, lost, and forwarded nothing at once: the message waits for the owner's execution to take it
    assert [dial for dial, _ in forwarded] == ["own2"]
    assert "own2" not in relay.owned and len(relay.pending) == 1


def test_a_message_the_owner_never_forwarded_is_forwarded_by_another_relay_after_the_fallback_delay(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    store = open_store(redis_client, Settings(pubsub_redis_url=redis_server.url))
    for dial in ("fb1", "fb2"):
        start_call(redis_server, dial)
        redis_client.set(Keys.relay_owner(dial), "owner")
    redis_client.set(Keys.bridge_alive("owner"), "1")  # it looks alive: its liveness key outlives a kill -9
    relay, forwarded = make_relay(redis_server, "other", [True], fallback_after=0.2)
    relay.on_message("fb1", json.dumps({"type": "hangup"}))
    relay.on_message("fb2", json.dumps({"type": "hangup"}))
    control_id = relay.pending[1][3]
    store.control_record("fb2", control_id, "the-owners-execution", 30_000)  # the owner took fb2's message
    relay._run_due()
    assert forwarded == []  # not yet
    time.sleep(0.25)
    relay._run_due()
    assert forwarded == [("fb1", {"type": "hangup", CONTROL_ID: control_id})]  # the same text: the same digest
    assert relay.pending == []


def test_a_channel_without_an_active_call_is_ignored(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    relay, forwarded = make_relay(redis_server, "r4", [True])
    relay.on_message("not_a_call", json.dumps({"type": "hangup"}))
    relay.on_message("not_a_call", "not json")
    assert forwarded == [] and relay.pending == []
    assert redis_client.keys("redswitch:*") == []  # no owner, no control log, no reply

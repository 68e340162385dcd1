"""The control relay's ownership check: a script call per message, unless ownership cannot have moved."""

from __future__ import annotations

import json

import redis

from redswitch.config import Settings
from redswitch.services.relay import Relay
from redswitch.store import Keys, open_store
from tests.servers import RedisServer


def owner_checks(client: redis.Redis) -> int:
    """EVALSHA calls so far (the ownership script is the relay's only script)."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(stats.get("cmdstat_eval", {}).get("calls", 0))


def make_relay(server: RedisServer, bridge_id: str, alive: list[bool]) -> tuple[Relay, list[str]]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    forwarded: list[str] = []
    store = open_store(client, Settings(pubsub_redis_url=server.url))
    relay = Relay(client, store, bridge_id, lambda actor, dial, msg: forwarded.append(dial), lambda: alive[0])
    return relay, forwarded


def test_while_our_bridge_is_surely_alive_an_owned_call_needs_no_ownership_check(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set(Keys.bridge_alive("r1"), "1")
    alive = [True]
    relay, forwarded = make_relay(redis_server, "r1", alive)
    whisper = json.dumps({"type": "whisper"})
    relay.on_message("warm", whisper)  # Redis now knows the script: one call per check from here on
    # The first message of a call takes ownership with one script call
    before = owner_checks(client)
    relay.on_message("own1", whisper)
    assert owner_checks(client) == before + 1
    # Later ones, while our liveness key cannot have expired, are forwarded without asking again
    relay.on_message("own1", whisper)
    relay.on_message("own1", whisper)
    assert owner_checks(client) == before + 1
    assert forwarded == ["warm", "own1", "own1", "own1"]


def test_once_our_liveness_is_in_doubt_ownership_is_checked_again_and_a_new_owner_wins(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    alive = [True]
    relay, forwarded = make_relay(redis_server, "r2", alive)
    client.set(Keys.bridge_alive("r2"), "1")
    relay.on_message("own2", json.dumps({"type": "mute"}))
    # When our heartbeat lapsed and another live bridge took the call over
    alive[0] = False
    client.delete(Keys.bridge_alive("r2"))
    client.set(Keys.bridge_alive("r3"), "1")
    client.set(Keys.relay_owner("own2"), "r3")
    relay.on_message("own2", json.dumps({"type": "mute"}))
    # Then we asked, lost, and forwarded nothing more
    assert forwarded == ["own2"]
    assert "own2" not in relay.owned

"""The scheduler over a real redis-server and the switch (simulator or real): lease, reconciliation, dead list."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from redswitch import originate
from redswitch.cli.launcher import redswitch_command
from redswitch.config import Settings
from redswitch.esl.client import EslClient
from redswitch.messages import AspCall
from redswitch.services.absences import Absences
from redswitch.services.scheduler import RECONCILED_REASON, Lease, Reconciler, Scheduler
from redswitch.simulator import Scenario, Simulator
from redswitch.store import Batch, CallStore, ChannelChange, Keys, events, open_store
from tests.servers import RedisServer, free_port
from tests.switch import Switch

SimFactory = Callable[..., Simulator]


def settings_for(redis_server: RedisServer, sim: Switch | Simulator, **extra: Any) -> Settings:
    values: dict[str, Any] = {"reconcile_grace": 0.0, **extra}
    return Settings(pubsub_redis_url=redis_server.url, esl_port=sim.port, esl_password=sim.password, **values)


def answer(side: str) -> str:
    return events.encode(events.answer(side))


def store_of(client: redis.Redis) -> CallStore:
    return open_store(client, Settings())


def place_call(
    client: redis.Redis, settings: Settings, dial_id: str, sides: tuple[str, ...] = ("0", "1")
) -> dict[str, str]:
    """Write a call as the actor and the listener would have: record ``sent``, the given sides answered."""
    store = open_store(client, settings)
    record = {
        "org_id": "org",
        "user_id": dial_id,
        "call_provider": "gw",
        "uuid0": str(uuid.uuid4()),
        "uuid1": str(uuid.uuid4()),
        "job_uuid": str(uuid.uuid4()),
        "state": "sent",
    }
    store.claim(dial_id, "org", dial_id, record)
    answers = [ChannelChange("answered", dial_id, "org", dial_id, side, "", answer(side)) for side in sides]
    store.apply(answers, Batch("test", 0))
    return record


def dial_in_simulator(settings: Settings, dial_id: str, record: dict[str, str], sim: Switch) -> None:
    """Have the switch really hold the call's legs (an originate as the actor sends it)."""
    call = AspCall("gw", "14155550100", "14155550100", "15105550100", "15105550100", dial_id, "org", dial_id)
    esl = EslClient("127.0.0.1", sim.port, sim.password)
    try:
        esl.bgapi(originate.click_to_call(settings, call, record["uuid0"], record["uuid1"]), str(uuid.uuid4()))
    finally:
        esl.close()
    deadline = time.monotonic() + 5
    while not {record["uuid0"], record["uuid1"]} <= set(sim.channels()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert {record["uuid0"], record["uuid1"]} <= set(sim.channels())


def reconcile(settings: Settings, client: redis.Redis, missing: Absences | None = None) -> Any:
    esl = EslClient(settings.esl_url, settings.esl_port, settings.esl_password)
    try:
        return Reconciler(settings, client, esl, Absences() if missing is None else missing).run_once()
    finally:
        esl.close()


def drain(pubsub: Any) -> list[Any]:
    """Every message so far: events decoded from JSON, lifecycle announcements as their text."""
    events: list[Any] = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        if message["type"] == "message":
            data = message["data"]
            events.append(data if message["channel"] == Keys.lifecycle() else json.loads(data))
    return events


# -- lease ----------------------------------------------------------------------------------------------------


def test_lease_has_one_holder_until_it_expires(redis_client: redis.Redis) -> None:
    # Given two schedulers' leases on one Redis
    first, second = Lease(store_of(redis_client), "a", ttl=0.5), Lease(store_of(redis_client), "b", ttl=0.5)
    # When the first takes it, then both keep asking
    assert first.hold()
    assert not second.hold()
    assert first.hold()  # renewing keeps it
    # Then the second gets it only once the first stops renewing and the lease expires
    time.sleep(0.6)
    assert second.hold()
    assert not first.hold()


def test_lease_release_frees_it_only_for_its_holder(redis_client: redis.Redis) -> None:
    first, second = Lease(store_of(redis_client), "a", ttl=30), Lease(store_of(redis_client), "b", ttl=30)
    assert first.hold()
    second.release()  # not the holder: no effect
    assert not second.hold()
    first.release()
    assert second.hold()


# -- reconciliation -------------------------------------------------------------------------------------------


def test_reconcile_publishes_missing_hangups_and_ends_call_when_freeswitch_lost_it(
    redis_client: redis.Redis, redis_server: RedisServer, switch: Switch
) -> None:
    # Given a call Redis holds as answered on both sides, which FreeSWITCH does not have
    settings = settings_for(redis_server, switch)
    place_call(redis_client, settings, "lost_call")
    pubsub = redis_client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe("lost_call", Keys.lifecycle())
    # When the scheduler reconciles
    report = reconcile(settings, redis_client)
    # Then side 1's and then side 0's hangup-event were published, marked as reconciled
    events = drain(pubsub)
    hangups = [e for e in events if isinstance(e, dict) and e.get("type") == "hangup-event"]
    expected = {"cause": "NORMAL_UNSPECIFIED", "reason": RECONCILED_REASON}
    assert hangups == [
        {"type": "hangup-event", "side": "1", **expected},
        {"type": "hangup-event", "side": "0", **expected},
    ]
    # And the call is over everywhere: active list empty, not active, relays told, history has the hangups
    assert redis_client.lrange(Keys(settings).active("lost_call", "org", "lost_call"), 0, -1) == []
    assert not redis_client.sismember(Keys.active_calls(), "lost_call")
    assert "end:lost_call" in events
    assert report.ended == ["lost_call"] and report.hung_up == [("lost_call", "1"), ("lost_call", "0")]
    history = [json.loads(item) for item in redis_client.lrange(Keys(settings).history("org", "lost_call"), 0, -1)]
    assert history[:2] == hangups[::-1]  # newest first


def test_reconcile_leaves_alone_a_call_freeswitch_still_has(
    redis_client: redis.Redis, redis_server: RedisServer, switch: Switch
) -> None:
    # Given a call whose two legs are up in FreeSWITCH
    settings = settings_for(redis_server, switch)
    record = place_call(redis_client, settings, "live_call")
    dial_in_simulator(settings, "live_call", record, switch)
    # When the scheduler reconciles
    report = reconcile(settings, redis_client)
    # Then nothing changed
    assert report.ended == [] and report.hung_up == [] and report.orphans == {}
    assert redis_client.sismember(Keys.active_calls(), "live_call")
    assert sorted(redis_client.lrange(Keys(settings).active("live_call", "org", "live_call"), 0, -1)) == [
        "ACTIVE.0",
        "ACTIVE.1",
    ]


@pytest.mark.parametrize("state", ["claimed", "dialling"])
def test_reconcile_skips_a_call_its_actor_is_still_placing(
    redis_client: redis.Redis, redis_server: RedisServer, switch: Switch, state: str
) -> None:
    # Given a call without channels whose record is not yet "sent"
    settings = settings_for(redis_server, switch)
    place_call(redis_client, settings, "young_call", sides=())
    redis_client.hset(Keys.call("young_call"), "state", state)
    # When the scheduler reconciles, Then the call is left to its actor
    assert reconcile(settings, redis_client).ended == []
    assert redis_client.sismember(Keys.active_calls(), "young_call")


def test_reconcile_waits_the_grace_period_across_passes(
    redis_client: redis.Redis, redis_server: RedisServer, switch: Switch
) -> None:
    # Given a lost call and a grace period of 0.3 s
    settings = settings_for(redis_server, switch, reconcile_grace=0.3)
    place_call(redis_client, settings, "graced_call")
    missing = Absences()
    # When the first pass sees it missing, Then it does nothing yet
    assert reconcile(settings, redis_client, missing).ended == []
    # And a pass after the grace period ends it
    time.sleep(0.35)
    assert reconcile(settings, redis_client, missing).ended == ["graced_call"]


def test_reconcile_reports_only_the_lost_barger_while_the_call_goes_on(
    redis_client: redis.Redis, redis_server: RedisServer, switch: Switch
) -> None:
    # Given a live call with a barger leg that FreeSWITCH no longer has
    settings = settings_for(redis_server, switch)
    record = place_call(redis_client, settings, "barged_call", sides=("0", "1", "2"))
    dial_in_simulator(settings, "barged_call", record, switch)
    redis_client.hset(Keys.call("barged_call"), mapping={"barger_uuid": str(uuid.uuid4()), "barger_mode": "listen"})
    # When the scheduler reconciles
    report = reconcile(settings, redis_client)
    # Then only side 2 hung up, the barger fields are cleared, and the call is still active
    assert report.hung_up == [("barged_call", "2")] and report.ended == []
    assert "barger_uuid" not in redis_client.hgetall(Keys.call("barged_call"))
    assert redis_client.sismember(Keys.active_calls(), "barged_call")


def test_reconcile_counts_a_channel_of_ours_that_redis_forgot(
    redis_client: redis.Redis, redis_server: RedisServer, switch: Switch
) -> None:
    # Given FreeSWITCH holding the legs of a call Redis knows nothing about
    settings = settings_for(redis_server, switch)
    record = {"uuid0": str(uuid.uuid4()), "uuid1": str(uuid.uuid4())}
    dial_in_simulator(settings, "forgotten", record, switch)
    # When the scheduler reconciles
    report = reconcile(settings, redis_client)
    # Then both legs are reported as orphans of that dial_id, and Redis is not touched
    assert report.orphans == {record["uuid0"]: "forgotten", record["uuid1"]: "forgotten"}
    assert not redis_client.sismember(Keys.active_calls(), "forgotten")


# -- dead list ------------------------------------------------------------------------------------------------


def test_trim_dead_drops_the_oldest_entries_beyond_dead_max(
    redis_client: redis.Redis, redis_server: RedisServer, switch: Switch
) -> None:
    # Given 15 parked jobs and DEAD_MAX=10
    settings = settings_for(redis_server, switch, dead_max=10)
    redis_client.rpush(settings.effective_dead_key, *[f"job{n}" for n in range(15)])
    # When the scheduler trims, Then the 5 oldest are gone and the newest kept in order
    assert Scheduler(settings, redis_client).trim_dead() == 5
    assert redis_client.lrange(settings.effective_dead_key, 0, -1) == [f"job{n}" for n in range(5, 15)]
    # And a second run has nothing to drop
    assert Scheduler(settings, redis_client).trim_dead() == 0


def test_scheduler_without_the_lease_does_not_act(
    redis_client: redis.Redis, redis_server: RedisServer, switch: Switch
) -> None:
    # Given another scheduler holding the lease, a lost call and a too-long dead list
    settings = settings_for(redis_server, switch, dead_max=1)
    Lease(store_of(redis_client), "someone-else", ttl=30).hold()
    place_call(redis_client, settings, "not_mine")
    redis_client.rpush(settings.effective_dead_key, "a", "b")
    follower = Scheduler(settings, redis_client)
    # When this one runs its jobs, Then it changes nothing
    assert follower.reconcile() is None
    assert follower.trim_dead() == 0
    assert redis_client.sismember(Keys.active_calls(), "not_mine")
    assert redis_client.llen(settings.effective_dead_key) == 2


# -- the process ----------------------------------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


@pytest.fixture
def schedulers(redis_server: RedisServer, simulator_factory: SimFactory) -> Iterator[Callable[[], tuple[int, Any]]]:
    """Start ``redswitch schedule`` processes (metrics on their own port) against one simulator."""
    sim = simulator_factory(scenario=Scenario.default().with_changes(heartbeat_interval=0.2))
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        env = {
            **os.environ,
            **settings_for(redis_server, sim, reconcile_interval=0.2, scheduler_lease=1.0).env(),
            "METRICS_PORT": str(port),
            "METRICS_HOST": "127.0.0.1",
        }
        proc = subprocess.Popen(redswitch_command("schedule"), env=env, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return port, proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


@pytest.mark.sim_only  # watches heartbeats every 0.2 s (a real switch sends one every 20 s)
def test_schedule_process_reconciles_watches_heartbeats_and_hands_over_the_lease(
    redis_client: redis.Redis, redis_server: RedisServer, schedulers: Callable[[], tuple[int, Any]]
) -> None:
    # Given two scheduler processes and a call FreeSWITCH lost
    settings = Settings(pubsub_redis_url=redis_server.url)
    place_call(redis_client, settings, "lost_in_process")
    (port_a, proc_a), (port_b, _) = schedulers(), schedulers()
    # Then the call is ended within a few passes, by exactly one of them
    assert wait_until(lambda: not redis_client.sismember(Keys.active_calls(), "lost_in_process"))
    assert wait_until(
        lambda: scrape(port_a)["redswitch_scheduler_leader"] + scrape(port_b)["redswitch_scheduler_leader"] == 1
    )
    a, b = scrape(port_a), scrape(port_b)
    assert a["redswitch_calls_reconciled_total"] + b["redswitch_calls_reconciled_total"] == 1
    # And both watch FreeSWITCH's heartbeat over an ESL connection that is up
    assert wait_until(lambda: scrape(port_b)["redswitch_freeswitch_last_heartbeat_timestamp_seconds"] > 0)
    assert scrape(port_a)["redswitch_esl_up"] == 1 and scrape(port_b)["redswitch_esl_up"] == 1
    # When the leader is killed outright, Then the other takes over once the lease expires
    leader_port, other_port = (port_a, port_b) if a["redswitch_scheduler_leader"] == 1 else (port_b, port_a)
    leader = proc_a if leader_port == port_a else _
    leader.send_signal(signal.SIGKILL)
    leader.wait(5)
    assert wait_until(lambda: scrape(other_port)["redswitch_scheduler_leader"] == 1, timeout=5)

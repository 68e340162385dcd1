"""Control that never goes missing, over real processes (redis-server, the simulator, bridges, worker, listener,
scheduler): a queued call's hangup, a message published the moment ``call-start`` is heard, an owner bridge
``kill -9``ed as the message is published, a duplicate ``dial_id``, answers the listener missed, ``redswitch send``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from redswitch.cli.launcher import redswitch_command
from redswitch.services.scheduler import RECONCILED_ANSWER_REASON
from tests.payloads import job
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer, free_port


@pytest.fixture
def started(redis_server: RedisServer, redis_client: Any) -> Iterator[list[Pipeline]]:
    """Pipelines a test starts (each with its own settings), stopped afterwards."""
    pipelines: list[Pipeline] = []
    yield pipelines
    for pipeline in pipelines:
        pipeline.stop()


def start(started: list[Pipeline], redis_server: RedisServer, **settings: Any) -> Pipeline:
    pipeline = Pipeline(redis_server.url, **settings)
    started.append(pipeline)
    return pipeline.start()


def replies(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in ("ack", "error") and e.get("event") == kind]


def uuid_kills(pipeline: Pipeline, uuid: str) -> int:
    return sum(1 for c in pipeline.switch.commands() if c.startswith(f"api uuid_kill {uuid}"))


# -- 1. hangup of a queued call --------------------------------------------------------------------------------


def test_hangup_of_a_queued_call_cancels_it_and_it_is_never_dialled(
    started: list[Pipeline], redis_server: RedisServer
) -> None:
    # Given an org limited to one call: A is up, B and C wait in line
    pipeline = start(started, redis_server, org_max_calls="orgc=1")
    a = pipeline.call("cq_a", org_id="orgc")
    waiting = {}
    for dial in ("cq_b", "cq_c"):
        waiting[dial] = pipeline.subscribe(dial)
        pipeline.push(dial_id=dial, user_id=dial, org_id="orgc")
        pipeline.events_until(waiting[dial], has("queued"))
    b = waiting["cq_b"]
    # When a barger or a whisper is sent to B, Then it is refused: B has not started
    for message in ({"type": "whisper"}, {"type": "barge", "phone_number": "15105550177", "caller_id": "1001"}):
        pipeline.publish("cq_b", message)
        kind = message["type"]
        error = replies(pipeline.events_until(b, lambda ev: bool(replies(ev, kind))), kind)  # noqa: B023
        assert error == [{"type": "error", "event": kind, "reason": "not started"}]
    # When B is hung up, Then it is acked, then its side 0 hangs up ORIGINATOR_CANCEL, and it is over
    pipeline.publish("cq_b", {"type": "hangup"})
    events = [e for e in pipeline.events_until(b, hung_up("0")) if e != {"type": "hangup"}]  # (ours, heard too)
    assert [e["type"] for e in events] == ["ack", "hangup-event"], events
    assert events[0] == {"type": "ack", "event": "hangup"}
    assert events[1]["cause"] == "ORIGINATOR_CANCEL" and events[1]["side"] == "0" and events[1]["reason"]
    assert not pipeline.client.sismember("redswitch:active", "cq_b")
    assert pipeline.client.exists("redswitch.cq_b.orgc.cq_b") == 0
    assert pipeline.client.hget("redswitch:call:cq_b", "state") == "cancelled"
    # And when A ends, the org's slot goes to C, never to B
    pipeline.switch.hangup(pipeline.channel_of_side("cq_a", "0"))
    pipeline.events_until(a, hung_up("0"))
    assert pipeline.wait_for(lambda: "cq_c" in pipeline.originated("cq_"), timeout=10), pipeline.logs()
    time.sleep(1.0)  # B's deferred message ran again meanwhile (every 250 ms): it must not dial
    assert sorted(pipeline.originated("cq_")) == ["cq_a", "cq_c"]
    assert pipeline.events_until(b, lambda ev: True, timeout=0.3) == []  # nothing more for B


# -- 2. the subscribe race -------------------------------------------------------------------------------------


@pytest.mark.sim_only  # 500 calls at once, unpaced
def test_a_hangup_published_the_moment_call_start_is_heard_is_executed_500_times_of_500(
    started: list[Pipeline], redis_server: RedisServer
) -> None:
    pipeline = start(started, redis_server, bridges=2)
    dials = [f"race{n}" for n in range(500)]
    pubsub = pipeline.client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(*dials)
    while pubsub.get_message(timeout=0.5) is not None:  # the confirmations
        pass
    pipeline.client.rpush(pipeline.settings.jobs_key, *[json.dumps(job(dial_id=d, user_id=d)) for d in dials])
    heard: dict[str, list[dict[str, Any]]] = {d: [] for d in dials}
    deadline = time.monotonic() + 120

    def ended(dial: str) -> bool:
        return any(e["type"] == "hangup-event" and e["side"] == "0" for e in heard[dial])

    while time.monotonic() < deadline and not all(replies(heard[d], "hangup") and ended(d) for d in dials):
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is None:
            continue
        event = json.loads(message["data"])
        heard[message["channel"]].append(event)
        if event["type"] == "call-start":  # at once: before any relay could have subscribed to a new channel
            pipeline.client.publish(message["channel"], '{"type": "hangup"}')
    pubsub.close()
    unanswered = [d for d in dials if not replies(heard[d], "hangup")]
    assert unanswered == [], (len(unanswered), unanswered[:5], pipeline.logs())
    assert {d: replies(heard[d], "hangup") for d in dials} == {d: [{"type": "ack", "event": "hangup"}] for d in dials}
    assert [d for d in dials if not ended(d)] == []
    assert pipeline.wait_for(lambda: pipeline.client.scard("redswitch:active") == 0, timeout=10)
    assert set(Counter(pipeline.originated("race")).values()) == {1}  # none dialled twice


# -- 3. a dead owner -------------------------------------------------------------------------------------------


def owner_child(pipeline: Pipeline, dial_id: str) -> Any:
    """The bridge process whose relay owns the call (its id is ``host-<pid>-<hex>``)."""
    owner = str(pipeline.client.get(f"redswitch:relay:{dial_id}") or "")
    assert owner, dial_id
    pid = int(owner.rsplit("-", 2)[1])
    assert pipeline.stack is not None
    return next(c for c in pipeline.stack.children if c.proc.pid == pid)


def subscribed_relays(pipeline: Pipeline) -> int:
    """Relays listening: connections pattern-subscribed (or, as relays were before, subscribed to redswitch:calls)."""
    patterns = sum(1 for c in pipeline.client.client_list() if int(c.get("psub", 0)) > 0)
    return patterns + int(dict(pipeline.client.pubsub_numsub("redswitch:calls"))["redswitch:calls"])


@pytest.mark.sim_only  # 100 calls up at once
@pytest.mark.timeout(480)  # a hundred kills, each message taken over after a second
def test_kill_9_of_the_owning_bridge_as_the_message_is_published_still_executes_it_once_100_times(
    started: list[Pipeline], redis_server: RedisServer
) -> None:
    pipeline = start(started, redis_server, bridges=3)
    assert pipeline.stack is not None
    assert pipeline.wait_for(lambda: subscribed_relays(pipeline) == 3, timeout=30)
    dials = [f"own{n}" for n in range(100)]
    pubsub = pipeline.client.pubsub()  # type: ignore[no-untyped-call]
    try:
        pubsub.subscribe(*dials)
        while pubsub.get_message(timeout=0.5) is not None:
            pass
        pipeline.client.rpush(pipeline.settings.jobs_key, *[json.dumps(job(dial_id=d, user_id=d)) for d in dials])
        answered: set[str] = set()
        deadline = time.monotonic() + 60
        while len(answered) < len(dials) and time.monotonic() < deadline:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None and json.loads(message["data"]) == {"type": "answer-event", "side": "1"}:
                answered.add(message["channel"])
        assert len(answered) == len(dials), pipeline.logs()
        took: list[float] = []
        spawned = 3
        for n, dial in enumerate(dials):
            # Given a call whose messages a relay owns (its first message made it the owner)
            pipeline.publish(dial, {"type": "mute"})
            pipeline.events_until(pubsub, lambda ev: any(e.get("event") == "mute" for e in ev))
            child = owner_child(pipeline, dial)
            # When its bridge is killed outright and the hangup published within the same millisecond
            if n % 2:
                os.killpg(child.proc.pid, signal.SIGKILL)
                pipeline.client.publish(dial, '{"type": "hangup"}')
            else:
                pipeline.client.publish(dial, '{"type": "hangup"}')
                os.killpg(child.proc.pid, signal.SIGKILL)
            sent = time.monotonic()
            # Then another bridge executes it, within a second or two
            events = pipeline.events_until(pubsub, lambda ev: bool(replies(ev, "hangup")), timeout=5)
            took.append(time.monotonic() - sent)
            assert replies(events, "hangup") == [{"type": "ack", "event": "hangup"}], (dial, events)
            child.proc.wait(5)
            pipeline.stack.children.remove(child)
            pipeline.stack.spawn(f"bridge{spawned}", redswitch_command("bridge"))
            spawned += 1
            assert pipeline.wait_for(lambda: subscribed_relays(pipeline) >= 3, timeout=30)
        time.sleep(1.5)  # past any other relay's fallback
        messages = iter(lambda: pubsub.get_message(timeout=0.2), None)
        late = [json.loads(m["data"]) for m in messages if m["type"] == "message"]
        assert [e for e in late if e["type"] in ("ack", "error")] == []  # no second execution answered
        for dial in dials:
            uuid0 = str(pipeline.client.hget(f"redswitch:call:{dial}", "uuid0"))
            assert uuid_kills(pipeline, uuid0) == 1, dial  # executed exactly once
    finally:
        pubsub.close()
    print(f"dead owner: hangup acked after {min(took):.2f}-{max(took):.2f} s (median {sorted(took)[50]:.2f} s)")
    assert max(took) < 2.5


# -- 4. a duplicate dial_id ------------------------------------------------------------------------------------


def scrape(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rpartition(" ")[2])
    return 0.0


def test_a_duplicate_dial_id_is_parked_and_never_heard_on_the_live_calls_channel(
    started: list[Pipeline], redis_server: RedisServer
) -> None:
    port = free_port()
    pipeline = start(started, redis_server, metrics_port=port, metrics_host="127.0.0.1")
    pubsub = pipeline.call("dup_live")
    watch = subprocess.Popen(
        redswitch_command("watch", "dup_live", "--until-hangup"),
        env={**os.environ, **pipeline.settings.env()},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # watch has subscribed
        # When the same dial_id is pushed again while the call is up
        pipeline.push(dial_id="dup_live", user_id="dup_live", callee_number="15105550999")
        assert pipeline.wait_for(lambda: pipeline.client.llen("talkiq-asp.calls.dead") == 1, timeout=5)
        # Then nothing is published on the call's channel, and the watcher goes on
        time.sleep(0.5)
        assert pipeline.events_until(pubsub, lambda ev: True, timeout=0.5) == []
        assert watch.poll() is None
        parked = json.loads(str(pipeline.client.lindex("talkiq-asp.calls.dead", 0)))
        assert parked["dial_id"] == "dup_live" and parked["cause"] == "DUPLICATE_DIAL_ID"
        assert parked["reason"].startswith("duplicate dial_id 'dup_live'")
        assert "dial_id=dup_live job parked" in pipeline.full_log("bridge0")
        # (the listener serves metrics on METRICS_PORT, the bridge on the next port)
        assert scrape(port + 1, 'redswitch_jobs_dead_total{cause="DUPLICATE_DIAL_ID"}') == 1
        # And the call is still the first one: it ends when its own side 0 hangs up
        pipeline.switch.hangup(pipeline.channel_of_side("dup_live", "0"))
        out, _ = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(5)
    assert watch.returncode == 0
    assert [json.loads(line)["type"] for line in out.splitlines()][-1] == "hangup-event"
    assert '"failure"' not in out
    assert pipeline.originated("dup_live") == ["dup_live"]


# -- 5. answers the listener missed ----------------------------------------------------------------------------


@pytest.mark.sim_only  # reads each channel's call state
def test_the_scheduler_publishes_answers_the_listener_missed_once_and_before_their_hangups(
    started: list[Pipeline], redis_server: RedisServer
) -> None:
    pipeline = start(started, redis_server, reconcile_interval=0.3, reconcile_grace=0.6)
    assert pipeline.stack is not None
    # Given the listener down while a call is answered on both sides
    pipeline.kill("listener")
    pubsub = pipeline.subscribe("missed")
    pipeline.push(dial_id="missed", user_id="missed")
    assert pipeline.wait_for(lambda: len(answered_legs(pipeline, "missed")) == 2, timeout=10), pipeline.logs()
    assert pipeline.events_until(pubsub, has("call-start"))[-1]["type"] == "call-start"
    # When the scheduler runs
    pipeline.stack.spawn("scheduler", redswitch_command("schedule"))
    # Then each side's answer is published once, side 0 first, marked as reconstructed
    events = pipeline.events_until(pubsub, has("answer-event", "1"), timeout=15)
    time.sleep(1.5)  # more passes: nothing is published twice
    events += pipeline.events_until(pubsub, lambda ev: True, timeout=0.3)
    reason = {"reason": RECONCILED_ANSWER_REASON}
    assert events == [
        {"type": "answer-event", "side": "0", **reason},
        {"type": "answer-event", "side": "1", **reason},
    ]
    assert sorted(pipeline.client.lrange("redswitch.missed.talkiq_org_id.missed", 0, -1)) == ["ACTIVE.0", "ACTIVE.1"]
    # And when the call ends (still no listener), its hangups follow the answers
    pipeline.switch.hangup(pipeline.channel_of_side("missed", "0"))
    events += pipeline.events_until(pubsub, hung_up("0", "1"), timeout=15)
    assert [(e["type"], e["side"]) for e in events] == [
        ("answer-event", "0"),
        ("answer-event", "1"),
        ("hangup-event", "1"),
        ("hangup-event", "0"),
    ]
    history = [json.loads(e) for e in pipeline.client.lrange("redswitch_history.talkiq_org_id.missed", 0, -1)]
    kinds = ["hangup-event", "hangup-event", "answer-event", "answer-event", "call-start"]
    assert [e["type"] for e in history] == kinds


def answered_legs(pipeline: Pipeline, dial_id: str) -> list[str]:
    return [
        uuid
        for uuid, channel in pipeline.simulator.channels().items()
        if channel.variables.get("redswitch_dial_id") == dial_id and channel.answered
    ]


# -- 6. redswitch send -----------------------------------------------------------------------------------------


def send(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **pipeline.settings.env()}
    return subprocess.run(redswitch_command("send", *args), env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.sim_only  # a barge whose leg answers
def test_redswitch_send_publishes_waits_for_the_reply_prints_it_and_exits_0_only_on_ack(
    started: list[Pipeline], redis_server: RedisServer
) -> None:
    pipeline = start(started, redis_server)
    pubsub = pipeline.call("cli_ctl")
    refused = send(pipeline, "cli_ctl", "whisper")
    assert refused.returncode == 1
    assert json.loads(refused.stdout) == {"type": "error", "event": "whisper", "reason": "no barger on this call"}
    barge = send(pipeline, "cli_ctl", "barge", "--phone", "15105550177", "--caller-id", "1001")
    assert (barge.returncode, json.loads(barge.stdout)) == (0, {"type": "ack", "event": "barge"}), barge.stderr
    pipeline.events_until(pubsub, has("answer-event", "2"))
    for kind in ("whisper", "threeway", "unthreeway", "mute"):
        done = send(pipeline, "cli_ctl", kind)
        assert (done.returncode, json.loads(done.stdout)) == (0, {"type": "ack", "event": kind}), done
    assert pipeline.simulator.eavesdrop_mode(pipeline.channel_of_side("cli_ctl", "2")) == "listen"
    hangup = send(pipeline, "cli_ctl", "hangup")
    assert (hangup.returncode, json.loads(hangup.stdout)) == (0, {"type": "ack", "event": "hangup"})
    pipeline.events_until(pubsub, hung_up("0"))
    # no reply: a timeout is an error
    silent = send(pipeline, "cli_nobody", "hangup", "--timeout", "1")
    assert silent.returncode == 1 and json.loads(silent.stdout)["type"] == "error"
    assert "no ack or error within 1s" in json.loads(silent.stdout)["reason"]
    # bad input never reaches the channel
    before = len(pipeline.switch.commands())
    for args in (["cli_ctl", "barge"], ["cli_ctl", "barge", "--phone", "1510 555"], ["bad id", "hangup"]):
        bad = send(pipeline, *args)
        assert bad.returncode == 2 and bad.stderr.startswith("redswitch send:"), (args, bad.stderr)
    assert send(pipeline, "cli_ctl", "explode").returncode == 2
    assert pipeline.commands_since(before) == []

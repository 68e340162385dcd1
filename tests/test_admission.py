"""Admission control over real processes: pacing to the switch's sessions-per-second, org limits, throttle retries."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from redswitch.esl.stream import EventStream
from redswitch.protocol.pick import header_picker
from redswitch.simulator import Scenario
from redswitch.simulator.scenario import Outcome
from tests.payloads import job
from tests.pipeline import Pipeline
from tests.servers import RedisServer

_PICK = header_picker(["Event-Date-Timestamp", "variable_redswitch_dial_id", "variable_redswitch_side"])


class Sessions:
    """Every CHANNEL_CREATE the simulator fires, with its own timestamp: sessions as the switch counts them."""

    def __init__(self, port: int) -> None:
        self.created: list[tuple[float, str, str]] = []
        self._stop = threading.Event()
        self._stream = EventStream("127.0.0.1", port, "ClueCon", 5.0)
        self._stream.connect()
        self._stream.subscribe(["CHANNEL_CREATE"])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for payload in self._stream.read_payloads(timeout=0.2):
                headers = _PICK(payload)
                stamp = int(headers.get("Event-Date-Timestamp", "0")) / 1e6
                self.created.append(
                    (stamp, headers.get("variable_redswitch_dial_id", ""), headers.get("variable_redswitch_side", ""))
                )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._stream.close()

    def max_per_second(self, side: str | None = None) -> int:
        """The most sessions (of ``side``, or all) created in any one-second window."""
        stamps = sorted(t for t, _dial, s in self.created if side is None or s == side)
        most, start = 0, 0
        for end, stamp in enumerate(stamps):
            while stamp - stamps[start] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
        return most

    def per_leg(self) -> Counter[tuple[str, str]]:
        return Counter((dial, side) for _t, dial, side in self.created)


def start(redis_server: RedisServer, scenario: Scenario, **settings: Any) -> Pipeline:
    return Pipeline(redis_server.url, scenario, **settings).start()


@pytest.fixture
def stack(redis_server: RedisServer, redis_client: Any) -> Iterator[list[Pipeline]]:
    """Pipelines started by a test (each test configures its own), stopped afterwards."""
    started: list[Pipeline] = []
    yield started
    for pipeline in started:
        pipeline.stop()


def history(pipeline: Pipeline, user_id: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in pipeline.client.lrange(f"redswitch_history.talkiq_org_id.{user_id}", 0, -1)]


def burst(stack: list[Pipeline], redis_server: RedisServer, count: int) -> None:
    """``count`` jobs at once against a switch that admits 30 sessions a second: all go out, none refused."""
    scenario = Scenario(default_outcome=Outcome(hangup_after=0.2), sessions_per_second=30)
    pipeline = start(redis_server, scenario, switch_cps=30)
    stack.append(pipeline)
    sessions = Sessions(pipeline.simulator.port)
    try:
        jobs = [json.dumps(job(dial_id=f"burst{n}", user_id=f"burst{n}")) for n in range(count)]
        began = time.monotonic()
        pipeline.client.rpush(pipeline.settings.jobs_key, *jobs)
        ended = lambda: all(  # noqa: E731
            any(e["type"] == "hangup-event" and e["side"] == "0" for e in history(pipeline, f"burst{n}"))
            or any(e["type"] == "failure" for e in history(pipeline, f"burst{n}"))
            for n in range(count)
        )
        assert pipeline.wait_for(ended, timeout=count / 10 + 30, interval=0.5), pipeline.logs()
        took = time.monotonic() - began
    finally:
        sessions.stop()
    originated = Counter(pipeline.originated("burst"))
    assert sorted(originated) == sorted(f"burst{n}" for n in range(count))
    assert set(originated.values()) == {1}  # each call dialled exactly once
    for n in range(count):  # none refused: every call was bridged and ended normally
        events = history(pipeline, f"burst{n}")
        assert {"type": "answer-event", "side": "1"} in events, events
        assert not [e for e in events if e["type"] == "failure"], events
    assert sessions.max_per_second() <= 30  # both sides counted, as FreeSWITCH counts them
    assert sessions.max_per_second(side="0") <= 15  # so at most 15 originates a second
    assert took >= (count - 15) / 15  # paced, not let through at once
    print(f"{count} calls in {took:.1f}s, peak {sessions.max_per_second()} sessions/s")


@pytest.mark.sim_only  # a switch limited to 30 sessions a second, calls ending by themselves
def test_a_burst_of_500_jobs_is_paced_to_the_switch_and_none_is_refused(stack, redis_server) -> None:
    burst(stack, redis_server, 500)


def test_an_org_over_its_limit_queues_calls_and_each_hangup_lets_the_next_out_in_order(stack, redis_server) -> None:
    pipeline = start(redis_server, Scenario(), org_max_calls="orgq=3,other=50")
    stack.append(pipeline)
    dials = [f"orgq{n}" for n in range(10)]
    pubsub = pipeline.client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(*dials)
    for dial in dials:
        pipeline.push(dial_id=dial, user_id=dial, org_id="orgq")
    queued: dict[str, int] = {}
    up: set[str] = set()
    deadline = time.monotonic() + 20
    while (len(queued) < 7 or len(up) < 3) and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is None:
            continue
        event = json.loads(message["data"])
        if event["type"] == "queued":
            assert message["channel"] not in queued  # told once
            queued[message["channel"]] = event["position"]
            assert event["reason"] == "org_max_calls"
        elif event == {"type": "answer-event", "side": "1"}:
            up.add(message["channel"])
    assert len(up) == 3 and len(queued) == 7, (up, queued, pipeline.logs())
    assert sorted(queued.values()) == list(range(1, 8))
    assert up.isdisjoint(queued)
    time.sleep(0.8)
    assert set(pipeline.originated("orgq")) == up  # no fourth call while three are up
    for expected in sorted(queued, key=queued.__getitem__):
        gone = sorted(up)[0]
        pipeline.switch.hangup(pipeline.channel_of_side(gone, "0"))
        up.remove(gone)
        assert pipeline.wait_for(lambda: len(pipeline.originated("orgq")) == 11 - len(queued), timeout=5)
        newest = pipeline.originated("orgq")[-1]
        assert newest == expected  # first queued, first out
        del queued[expected]
        up.add(newest)
        assert len(set(pipeline.originated("orgq"))) == len(pipeline.originated("orgq"))
    pubsub.close()


@pytest.mark.sim_only  # a switch limited to 2 sessions a second
def test_a_throttled_originate_is_sent_again_and_a_failure_after_side_0_existed_is_not(stack, redis_server) -> None:
    # Given a switch admitting two sessions a second (one call), and no pacing of ours to protect it
    pipeline = start(redis_server, Scenario(sessions_per_second=2), switch_cps=0)
    stack.append(pipeline)
    sessions = Sessions(pipeline.simulator.port)
    try:
        first = pipeline.subscribe("thr0")
        pubsub = pipeline.subscribe("thr1")
        pipeline.push(dial_id="thr0", user_id="thr0")
        pipeline.events_until(first, lambda ev: {"type": "answer-event", "side": "1"} in ev, timeout=10)
        # When a second call comes within the same second, the switch refuses it (no channel at all)
        pipeline.push(dial_id="thr1", user_id="thr1")
        # Then it is sent again, with backoff, until the switch takes it, and it is bridged, each side rung once
        events = pipeline.events_until(pubsub, lambda ev: {"type": "answer-event", "side": "1"} in ev, timeout=10)
        assert [e for e in events if e["type"] == "failure"] == []
        commands = Counter(pipeline.originated("thr"))
        assert commands["thr0"] == 1 and commands["thr1"] >= 2, commands  # refused, then sent again
        # And when the switch refuses after side 0 existed (a transient cause), the call is reported, not redialled
        late = pipeline.subscribe("thr2")
        time.sleep(1.1)
        pipeline.push(dial_id="thr2", user_id="thr2", caller_number="15105550503")
        ended = pipeline.events_until(late, lambda ev: any(e["type"] == "hangup-event" for e in ev), timeout=10)
        time.sleep(2.0)  # past the first retry's backoff
    finally:
        sessions.stop()
    hangup = next(e for e in ended if e["type"] == "hangup-event")
    assert hangup["cause"] == "NORMAL_TEMPORARY_FAILURE"
    assert pipeline.originated("thr2") == ["thr2"]
    legs = sessions.per_leg()
    assert legs[("thr0", "0")] == legs[("thr1", "0")] == legs[("thr2", "0")] == 1
    assert legs[("thr0", "1")] == legs[("thr1", "1")] == 1

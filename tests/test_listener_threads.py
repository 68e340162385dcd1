"""The listener's two threads per node, over a real ESL socket and a real Redis: reading runs ahead of the Redis
round trips, and nothing it read is lost, reordered or left behind by a clean stop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bench.feeder import Feeder, call_events
from redswitch.config import Settings
from redswitch.services import listener as listener_module
from redswitch.services.listener import Action, Listener, Pending
from redswitch.store import Batch
from redswitch.store.connection import redis_from_settings
from tests.servers import RedisServer

CALLS = 300
SEQUENCE = [("answer-event", "0"), ("answer-event", "1"), ("hangup-event", "1"), ("hangup-event", "0")]


def no_resend(job: dict[str, Any], delay_ms: int) -> None:
    raise AssertionError("no originate is throttled here")


class SlowFirst(Listener):
    """Its first round trip takes a while (a slow Redis), so that the reads behind it pile up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def record(self, pending: Pending) -> None:
        if not self.sizes:
            time.sleep(0.3)
        self.sizes.append(len(pending.actions))
        super().record(pending)


@pytest.fixture
def fed(redis_server: RedisServer) -> Iterator[tuple[Settings, redis.Redis, str]]:
    prefix = f"lt{time.monotonic_ns()}_"
    payload, _ = call_events(CALLS, prefix)
    feeder = Feeder(payload)
    settings = Settings(pubsub_redis_url=redis_server.url, esl_port=feeder.port)
    yield settings, redis_from_settings(settings), prefix
    feeder.close()


def history(client: redis.Redis, dial_id: str) -> list[tuple[str, str]]:
    """The call's history, oldest first (the list holds the newest first, as the original's did)."""
    newest_first = client.lrange(f"redswitch_history.bench_org.{dial_id}", 0, -1)
    return [(e["type"], e["side"]) for e in map(json.loads, reversed(newest_first))]


def run(listener: Listener, stop: threading.Event) -> tuple[threading.Thread, list[BaseException]]:
    raised: list[BaseException] = []

    def target() -> None:
        try:
            listener.run(stop)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, raised


def wait(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(predicate())


def run_until_applied(
    listener: Listener, client: redis.Redis, prefix: str, timeout: float = 20.0
) -> list[BaseException]:
    """Run ``listener`` until the feeder's last call has all four events recorded, then stop it cleanly."""
    stop = threading.Event()
    thread, raised = run(listener, stop)
    try:
        assert wait(lambda: len(history(client, f"{prefix}{CALLS - 1}")) == 4, timeout)
    finally:
        stop.set()
        thread.join(10)
    return raised


def test_reads_piled_up_behind_a_slow_round_trip_go_in_one_and_every_call_keeps_its_order(
    fed: tuple[Settings, redis.Redis, str],
) -> None:
    settings, client, prefix = fed
    # Given a listener whose first Redis round trip is slow, fed 1,200 events as fast as the socket takes them
    listener = SlowFirst(settings, client, no_resend)
    # When every event has been applied
    raised = run_until_applied(listener, client, prefix)
    # Then the reads that arrived meanwhile went out together (one read holds about a hundred of these events)
    assert max(listener.sizes) >= 500 and sum(listener.sizes) == 4 * CALLS
    # and every call's events were published once each, in the order FreeSWITCH sent them
    assert all(history(client, f"{prefix}{n}") == SEQUENCE for n in range(CALLS))
    assert raised == []


def test_a_clean_stop_applies_everything_already_read(
    fed: tuple[Settings, redis.Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, client, prefix = fed
    # Given a listener that counts what it translates, and whose first round trip is slow
    translated: list[Action] = []
    action_of = listener_module.action_of

    def counting(payload: bytes) -> Action | None:
        action = action_of(payload)
        if action is not None:
            translated.append(action)
        return action

    monkeypatch.setattr(listener_module, "action_of", counting)
    listener, stop = SlowFirst(settings, client, no_resend), threading.Event()
    thread, raised = run(listener, stop)
    # When it is told to stop while reads are waiting behind that round trip
    assert wait(lambda: len(translated) > 0)
    stop.set()
    thread.join(10)
    # Then it stopped, and everything it had read reached Redis
    assert not thread.is_alive() and raised == []
    assert 0 < sum(listener.sizes) == len(translated)


def test_a_failure_that_is_not_redis_stops_the_listener_instead_of_leaving_it_reading(
    fed: tuple[Settings, redis.Redis, str],
) -> None:
    settings, client, _ = fed

    class Broken(Listener):
        def record(self, pending: Pending) -> None:
            raise RuntimeError("a bug in applying events")

    # Given a listener whose applying thread fails on the first events
    stop = threading.Event()
    thread, raised = run(Broken(settings, client, no_resend), stop)
    # Then the listener itself ends with that failure, without being told to stop
    thread.join(10)
    assert not thread.is_alive() and not stop.is_set()
    assert [str(exc) for exc in raised] == ["a bug in applying events"]


class LostReplies(Listener):
    """Redis applies each of its first batches, then the connection drops before the reply: the listener retries."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = 0

    def apply(self, pending: Pending) -> None:
        super().apply(pending)
        if self.lost < 3:
            self.lost += 1
            pending.events_done, pending.jobs_done = False, 0  # as if nothing was known done
            raise redis.exceptions.ConnectionError("reply lost")


def test_a_batch_retried_after_its_reply_was_lost_publishes_nothing_twice(
    fed: tuple[Settings, redis.Redis, str],
) -> None:
    settings, client, prefix = fed
    # Given a listener whose first three batches reach Redis but whose replies are lost
    listener = LostReplies(settings, client, no_resend)
    # When it retries them and goes on
    raised = run_until_applied(listener, client, prefix, timeout=30)
    # Then every call's events were published exactly once, in order
    assert listener.lost == 3 and raised == []
    assert all(history(client, f"{prefix}{n}") == SEQUENCE for n in range(CALLS))


def test_a_retried_batch_does_not_handle_again_the_job_results_it_already_handled(redis_server: RedisServer) -> None:
    # Given a batch of three originate results whose second one fails on a dropped connection once
    settings = Settings(pubsub_redis_url=redis_server.url)
    handled: list[str] = []

    class Flaky(Listener):
        def _job_done(self, action: Action, node: str) -> None:
            if action.job_uuid == "j2" and "j2" not in handled:
                handled.append("j2")
                raise redis.exceptions.ConnectionError("connection dropped")
            handled.append(action.job_uuid)

    jobs = [Action("job_done", "", job_uuid=f"j{n}", result="+OK") for n in (1, 2, 3)]
    pending = Pending(jobs, Batch(f"test-{time.monotonic_ns()}", 1))
    # When the batch is applied until Redis takes it all
    assert Flaky(settings, redis_from_settings(settings), no_resend)._apply_until_done(pending, threading.Event())
    # Then each result was handled once, in order, the failed one again
    assert handled == ["j1", "j2", "j2", "j3"]

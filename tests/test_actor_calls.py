"""The asp_call actor run in-process (StubBroker) against the simulator: exactly-once dialling under faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis

from redswitch.errors import EslConnectionError, EslUncertainError
from redswitch.simulator import Simulator
from redswitch.store import Keys
from tests.payloads import job
from tests.servers import RedisServer


@pytest.fixture
def actors(
    monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis, redis_server: RedisServer, simulator: Simulator
) -> Iterator[Any]:
    monkeypatch.setenv("BROKER_URL", "stub://")
    monkeypatch.setenv("PUBSUB_REDIS_URL", redis_server.url)
    monkeypatch.setenv("ESL_PORT", str(simulator.port))
    monkeypatch.setenv("ESL_TIMEOUT", "0.3")
    monkeypatch.setenv("REDIAL_GUARD", "0.5")
    monkeypatch.setenv("SWITCH_CPS", "0")  # these tests run the actor's function directly: nothing runs a deferral
    import redswitch.actors
    from redswitch.actors import context

    context.reset()
    yield redswitch.actors
    context.esl_pool().close_all()
    context.reset()


def originates(simulator: Simulator, dial_id: str) -> int:
    return sum(1 for c in simulator.commands() if "originate" in c and f"redswitch_dial_id={dial_id}," in c)


def state_of(client: redis.Redis, dial_id: str) -> str:
    return str(client.hget(Keys.call(dial_id), "state"))


def test_a_timed_out_originate_is_not_dialled_again_once_freeswitch_shows_it(actors, simulator, redis_client) -> None:
    actors.context.esl_pool().client().api("status")  # this thread's connection is up
    simulator.set_reply_delay(1.0)
    with pytest.raises(EslUncertainError):
        actors.asp_call.fn(job(dial_id="late1"))
    assert state_of(redis_client, "late1") == "dialling"
    simulator.set_reply_delay(0)
    time.sleep(1.3)  # the slow switch runs the originate after all
    actors.asp_call.fn(job(dial_id="late1"))  # the retry
    assert originates(simulator, "late1") == 1
    assert state_of(redis_client, "late1") == "sent"


def test_an_attempt_without_any_trace_is_redialled_only_after_the_guard(actors, simulator, redis_client) -> None:
    # Given a worker that died right after marking the call as being dialled
    actors.asp_call.fn(job(dial_id="ghost1", caller_number="15105550486"))  # busy: leaves no live channel
    redis_client.hset(Keys.call("ghost1"), mapping={"state": "dialling", "dialling_since": f"{time.time():.3f}"})
    redis_client.hdel(Keys.call("ghost1"), "seen", "job_result")
    redis_client.hset(Keys.call("ghost1"), "uuid0", "00000000-0000-4000-8000-000000000000")
    # When the message runs again within the guard, it waits instead of dialling
    with pytest.raises(dramatiq.Retry):
        actors.asp_call.fn(job(dial_id="ghost1", caller_number="15105550486"))
    assert originates(simulator, "ghost1") == 1
    # Then after the guard it dials again
    time.sleep(0.6)
    actors.asp_call.fn(job(dial_id="ghost1", caller_number="15105550486"))
    assert originates(simulator, "ghost1") == 2


def test_an_originate_written_but_never_answered_is_never_dialled_again(actors, simulator, redis_client) -> None:
    # Given a switch too busy to reply within ESL_TIMEOUT: the originate was written, its reply never came
    actors.context.esl_pool().client().api("status")
    simulator.set_reply_delay(1.0)
    with pytest.raises(EslUncertainError):
        actors.asp_call.fn(job(dial_id="busy1", caller_number="15105550486"))  # busy: leaves no live channel
    simulator.set_reply_delay(0)
    record = redis_client.hgetall(Keys.call("busy1"))
    assert (record["state"], record["uncertain"]) == ("dialling", "1")
    # and no trace of it anywhere yet (the switch has not got round to it)
    redis_client.hdel(Keys.call("busy1"), "seen", "job_result")
    redis_client.hset(Keys.call("busy1"), "uuid0", "00000000-0000-4000-8000-000000000000")
    # When the message runs again within the guard, it waits
    with pytest.raises(dramatiq.Retry):
        actors.asp_call.fn(job(dial_id="busy1", caller_number="15105550486"))
    # And after the guard (the switch has meanwhile run the originate, late) it still does not dial again
    deadline = time.monotonic() + 5
    while originates(simulator, "busy1") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.6)
    actors.asp_call.fn(job(dial_id="busy1", caller_number="15105550486"))
    assert originates(simulator, "busy1") == 1
    assert state_of(redis_client, "busy1") == "sent"


def test_a_refused_connection_is_retried_at_once(actors, simulator, redis_client) -> None:
    simulator.refuse_connections(True)
    try:
        with pytest.raises(EslConnectionError) as caught:
            actors.asp_call.fn(job(dial_id="refused1"))
        assert not isinstance(caught.value, EslUncertainError)
        assert state_of(redis_client, "refused1") == "claimed"
    finally:
        simulator.refuse_connections(False)
    actors.asp_call.fn(job(dial_id="refused1"))
    assert originates(simulator, "refused1") == 1
    assert state_of(redis_client, "refused1") == "sent"


def test_a_message_run_twice_after_success_dials_once(actors, simulator, redis_client) -> None:
    actors.asp_call.fn(job(dial_id="twice1"))
    actors.asp_call.fn(job(dial_id="twice1"))
    assert originates(simulator, "twice1") == 1


def test_many_calls_through_many_threads_each_dial_once_with_their_own_replies(actors, simulator) -> None:
    errors: list[BaseException] = []

    def worker(thread: int) -> None:
        try:
            for n in range(25):
                actors.asp_call.fn(job(dial_id=f"t{thread}_{n}", user_id=f"t{thread}_{n}"))
        except BaseException as exc:  # noqa: B036 - collected and asserted below
            errors.append(exc)
        finally:
            actors.context.esl_pool().client().close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for t in range(8):
        for n in range(25):
            assert originates(simulator, f"t{t}_{n}") == 1


def test_the_client_api_validates_and_enqueues_jobs_and_control_messages(actors) -> None:
    from redswitch.client import send_asp_call, send_control
    from redswitch.errors import PayloadError

    broker = actors.broker
    broker.flush_all()
    assert send_asp_call(job(dial_id="client1"))
    assert send_control("client1", {"type": "barge", "phone_number": "777-777-7777", "caller_id": "1001"})
    calls = broker.queues["redswitch-calls"]
    control = broker.queues["redswitch-control"]
    assert calls.qsize() == 1 and control.qsize() == 1
    with pytest.raises(PayloadError):
        send_control("client1", {"type": "barge", "phone_number": "1 2", "caller_id": "1001"})
    with pytest.raises(PayloadError):
        send_control("bad id", {"type": "hangup"})
    with pytest.raises(PayloadError):
        send_asp_call(job(callee_number="1;2"))
    assert calls.qsize() == 1 and control.qsize() == 1  # nothing invalid was enqueued
    broker.flush_all()

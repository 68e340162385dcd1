"""RabbitMQ as the Dramatiq broker (Redis stays for pub/sub and state): the asp-call and control paths."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.payloads import job
from tests.pipeline import Pipeline, has, hung_up
from tests.rabbitmq import Vhost, rabbitmq_reachable
from tests.servers import RedisServer


@pytest.fixture(scope="module")
def vhost() -> Iterator[Vhost]:
    assert rabbitmq_reachable(), "RabbitMQ must listen on 127.0.0.1:5672 (.ci/run starts it)"
    created = Vhost().create()
    yield created
    created.delete()


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer, vhost: Vhost) -> Iterator[Pipeline]:
    running = Pipeline(redis_server.url, broker_url=vhost.url).start()
    yield running
    running.stop()


def test_asp_call_and_control_run_on_rabbitmq(pipeline: Pipeline) -> None:
    pubsub = pipeline.call("rmq_call")
    pipeline.publish("rmq_call", {"type": "barge", "phone_number": "15105550177", "caller_id": "777-777-7777"})
    pipeline.events_until(pubsub, lambda ev: has("answer-event", "2")(ev) and has("ack")(ev))
    barger = pipeline.channel_of_side("rmq_call", "2")
    pipeline.publish("rmq_call", {"type": "whisper"})
    pipeline.events_until(pubsub, lambda ev: any(e.get("event") == "whisper" for e in ev))
    assert pipeline.simulator.eavesdrop_mode(barger) == "talk_target"
    pipeline.publish("rmq_call", {"type": "hangup"})
    events = pipeline.events_until(pubsub, hung_up("0", "1", "2"))
    assert {e["cause"] for e in events if e["type"] == "hangup-event"} == {"NORMAL_CLEARING"}
    assert "amqp://" in pipeline.settings.effective_broker_url


def test_a_burst_on_rabbitmq_dials_each_job_once(pipeline: Pipeline) -> None:
    jobs = [json.dumps(job(dial_id=f"rmqb_{n}", user_id=f"rmqb_{n}")) for n in range(200)]
    pipeline.client.rpush(pipeline.settings.jobs_key, *jobs)
    assert pipeline.wait_for(lambda: len(set(pipeline.originated("rmqb_"))) >= 200, timeout=60), pipeline.logs()
    time.sleep(0.5)
    counts = Counter(pipeline.originated("rmqb_"))
    assert len(counts) == 200 and max(counts.values()) == 1
    assert pipeline.leftovers() == {}

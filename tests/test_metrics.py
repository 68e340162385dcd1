"""Metrics scraped over HTTP from the real bridge and listener processes while calls run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from redswitch import metrics
from redswitch.cli.launcher import redswitch_command, worker_command
from redswitch.config import Settings
from redswitch.simulator import Simulator
from tests.payloads import job
from tests.servers import RedisServer, free_port
from tests.test_scheduler import scrape, wait_until


class Processes:
    """Bridge and listener with their own metrics ports, and a worker, against one Redis and one simulator."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ports = {"bridge": free_port(), "listener": free_port()}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Processes:
        self._spawn(redswitch_command("bridge"), self.ports["bridge"])
        self._spawn(redswitch_command("listen"), self.ports["listener"])
        self._spawn(worker_command(threads=2), 0)
        return self

    def _spawn(self, command: list[str], port: int) -> None:
        env = {
            **os.environ,
            **self.settings.env(),
            "METRICS_PORT": str(port),
            "METRICS_HOST": "127.0.0.1",
            "dramatiq_worker_timeout": "100",
        }
        self.procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def scrape(self, name: str) -> dict[str, float]:
        return scrape(self.ports[name])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def processes(redis_server: RedisServer, simulator: Simulator, redis_client: redis.Redis) -> Iterator[Processes]:
    settings = Settings(pubsub_redis_url=redis_server.url, esl_port=simulator.port, originate_timeout=2)
    running = Processes(settings).start()
    yield running
    running.stop()


def metric(samples: dict[str, float], name: str) -> float:
    return samples.get(name, 0.0)


def counted(processes: Processes, name: str, sample: str, at_least: float) -> Callable[[], bool]:
    return lambda: metric(processes.scrape(name), sample) >= at_least


def test_bridge_and_listener_metrics_move_when_calls_run(processes: Processes, redis_client: redis.Redis) -> None:
    # Given the metrics endpoints are up and nothing has happened yet
    assert wait_until(lambda: "redswitch_jobs_taken_total" in processes.scrape("bridge"), timeout=15)
    assert metric(processes.scrape("bridge"), "redswitch_jobs_taken_total") == 0
    # When one call is answered on both sides, and one job is invalid
    pubsub: Any = redis_client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe("metrics_call")
    redis_client.rpush(processes.settings.jobs_key, json.dumps(job(dial_id="metrics_call", user_id="m")))
    redis_client.rpush(processes.settings.jobs_key, json.dumps(job(dial_id="bad_call", caller_number="x")))
    answered: set[str] = set()
    deadline = time.monotonic() + 20
    while answered != {"0", "1"} and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if (
            message
            and message["type"] == "message"
            and (event := json.loads(message["data"]))["type"] == "answer-event"
        ):
            answered.add(event["side"])
    assert answered == {"0", "1"}
    # Then the bridge counted both jobs taken, one enqueued, one dead-lettered as INVALID_JOB
    assert wait_until(counted(processes, "bridge", 'redswitch_jobs_dead_total{cause="INVALID_JOB"}', 1))
    bridge = processes.scrape("bridge")
    assert metric(bridge, "redswitch_jobs_taken_total") == 2
    assert metric(bridge, "redswitch_jobs_enqueued_total") == 1
    assert metric(bridge, 'redswitch_calls_failed_total{cause="INVALID_JOB"}') == 1
    # And the listener counted both answers and timed their publication
    assert wait_until(counted(processes, "listener", 'redswitch_events_published_total{type="answer-event"}', 2))
    listener = processes.scrape("listener")
    assert metric(listener, "redswitch_event_to_publish_seconds_count") >= 1
    assert metric(listener, "redswitch_esl_reconnects_total") == 0


def test_cause_label_keeps_cause_names_and_folds_free_text() -> None:
    assert metrics.cause_label("USER_BUSY") == "USER_BUSY"
    assert metrics.cause_label("-ERR no such gateway foo") == "OTHER"


def test_metrics_server_is_off_when_metrics_port_is_0() -> None:
    assert metrics.start_metrics_server(Settings()) == 0


def test_worker_serves_dramatiq_and_redswitch_metrics_on_dramatiq_prom_port(
    redis_server: RedisServer, simulator: Simulator, redis_client: redis.Redis, tmp_path: Any
) -> None:
    settings = Settings(pubsub_redis_url=redis_server.url, esl_port=simulator.port, originate_timeout=2)
    port = free_port()
    env = {
        **os.environ,
        **settings.env(),
        "dramatiq_prom_port": str(port),
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_db": str(tmp_path),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    worker = subprocess.Popen(worker_command(threads=2), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: bool(scrape(port)), timeout=20)  # the exposition server is up
        # When a job is enqueued directly (no bridge needed) and dialled
        import dramatiq as dq

        from redswitch.broker.waking import WakingRedisBroker

        broker = WakingRedisBroker(url=redis_server.url)  # type: ignore[no-untyped-call]
        broker.enqueue(
            dq.Message(
                queue_name="redswitch-calls",
                actor_name="asp_call",
                args=(job(dial_id="worker_metrics"),),
                kwargs={},
                options={},
            )
        )
        # Then Dramatiq's own counters and ours both move on the one endpoint
        assert wait_until(lambda: metric(scrape(port), "redswitch_calls_originated_total") >= 1, timeout=20)
        samples = scrape(port)
        assert any(name.startswith("dramatiq_messages_total") and value >= 1 for name, value in samples.items())
        assert any(name.startswith("redswitch_job_to_originate_seconds_count") for name in samples)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)

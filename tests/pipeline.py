"""The whole pipeline over real processes: redis-server, simulator, listener, dramatiq worker, bridge."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis

from redswitch.config import Settings
from redswitch.launcher import Stack
from redswitch.simulator import Scenario, Simulator
from tests.payloads import job, next_event


class Pipeline:
    def __init__(self, redis_url: str, scenario: Scenario | None = None, bridges: int = 1, **settings: Any) -> None:
        self.bridges = bridges
        self.simulator = Simulator(host="127.0.0.1", port=0, password="ClueCon", scenario=scenario)
        self.redis_url = redis_url
        self.log_dir = tempfile.mkdtemp(prefix="redswitch-pipeline-")
        self.extra = settings
        self.stack: Stack | None = None

    def start(self) -> Pipeline:
        self.simulator.start()
        self.settings = Settings(
            pubsub_redis_url=self.redis_url, esl_port=self.simulator.port, originate_timeout=2, **self.extra
        )
        self.stack = Stack(self.settings, bridges=self.bridges, log_dir=self.log_dir).start()
        self.client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        return self

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        self.simulator.stop()

    def logs(self) -> str:
        import pathlib

        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in pathlib.Path(self.log_dir).glob("*.log"))

    def push(self, **overrides: Any) -> dict[str, Any]:
        payload = job(**overrides)
        self.client.rpush(self.settings.jobs_key, json.dumps(payload))
        return payload

    def subscribe(self, dial_id: str) -> Any:
        pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        pubsub.subscribe(dial_id)
        pubsub.get_message(timeout=1)  # the subscribe confirmation
        return pubsub

    def events_until(
        self, pubsub: Any, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not done(events) and time.monotonic() < deadline:
            event = next_event(pubsub, timeout=0.2)
            if event is not None:
                events.append(event)
        assert done(events), f"events so far: {events}\n{self.logs()}"
        return events

    def publish(self, dial_id: str, message: dict[str, Any] | str) -> None:
        self.client.publish(dial_id, message if isinstance(message, str) else json.dumps(message))

    def call(self, dial_id: str, **overrides: Any) -> Any:
        """Place a call and wait until both sides answered; return the subscribed pubsub."""
        pubsub = self.subscribe(dial_id)
        self.push(dial_id=dial_id, user_id=dial_id, **overrides)
        self.events_until(pubsub, lambda ev: has("answer-event", "0")(ev) and has("answer-event", "1")(ev))
        return pubsub

    def enqueue(self, actor_name: str, *args: Any, queue: str = "redswitch-control") -> None:
        """Enqueue a message the way another Python service would, without importing the actors."""
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=self.redis_url)  # type: ignore[no-untyped-call]
        broker.enqueue(dramatiq.Message(queue_name=queue, actor_name=actor_name, args=args, kwargs={}, options={}))
        broker.close()

    def channel_of_side(self, dial_id: str, side: str) -> str:
        for uuid, channel in self.simulator.channels().items():
            variables = channel.variables
            if variables.get("redswitch_dial_id") == dial_id and variables.get("redswitch_side") == side:
                return str(uuid)
        raise KeyError(f"no live channel for {dial_id} side {side}")


def hung_up(*sides: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: {e.get("side") for e in events if e["type"] == "hangup-event"} >= set(sides)


def has(kind: str, side: str | None = None) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(e["type"] == kind and (side is None or e.get("side") == side) for e in events)

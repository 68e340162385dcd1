"""The whole pipeline over real processes: redis-server, the switch (simulator or real), listener, worker, bridge."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis

from redswitch.cli.launcher import Stack
from redswitch.config import Settings
from redswitch.simulator import Scenario, Simulator
from tests.payloads import job, next_event
from tests.switch import Switch, start_switch


class Pipeline:
    def __init__(
        self,
        redis_url: str,
        scenario: Scenario | None = None,
        bridges: int = 1,
        env: dict[str, str] | None = None,
        listener: bool = True,
        **settings: Any,
    ) -> None:
        self.bridges = bridges
        self.env = env or {}
        self.listener = listener
        self.scenario = scenario
        self._switch: Switch | None = None
        #: Starts the switch (the benchmarks run the simulator in a process of its own).
        self.switch_factory: Callable[[Scenario | None], Switch] = start_switch
        self.redis_url = redis_url
        self.log_dir = tempfile.mkdtemp(prefix="redswitch-pipeline-")
        self.extra = settings
        self.stack: Stack | None = None

    @property
    def switch(self) -> Switch:
        """The switch this pipeline runs against: a simulator, or the real FreeSWITCH (tests/switch.py)."""
        assert self._switch is not None, "the pipeline is not started"
        return self._switch

    @property
    def simulator(self) -> Simulator:
        """The simulator this pipeline runs against (only in sim_only tests: a real switch has no such controls)."""
        assert isinstance(self._switch, Simulator), "a real switch: mark this test sim_only"
        return self._switch

    def start(self) -> Pipeline:
        """Start everything, or, when any part fails to come up, stop what did start (no process outlives it)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Pipeline:
        self._switch = self.switch_factory(self.scenario)
        # No pacing unless a test asks: the simulator, like these tests, has no sessions-per-second limit by default.
        values = {"originate_timeout": 2, "switch_cps": 0, **self.extra}
        self.settings = Settings(
            pubsub_redis_url=self.redis_url, esl_port=self.switch.port, esl_password=self.switch.password, **values
        )
        self.stack = Stack(
            self.settings, bridges=self.bridges, listener=self.listener, env=self.env, log_dir=self.log_dir
        ).start()
        self.client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        if self.listener:  # events the switch sends before the listener subscribed would be lost
            subscribed = self.wait_for(lambda: any(c.startswith("event plain") for c in self.switch.commands()))
            assert subscribed, self.logs()
        return self

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        if self._switch is not None:
            self._switch.stop()
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def full_log(self, name: str) -> str:
        import pathlib

        path = pathlib.Path(self.log_dir) / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        import pathlib

        logs = sorted(pathlib.Path(self.log_dir).glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)

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

    def child(self, name: str) -> Any:
        assert self.stack is not None
        return next(c for c in self.stack.children if c.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL one of the pipeline's processes (a crash, not a shutdown)."""

        child = self.child(name)
        child.kill()
        assert self.stack is not None
        self.stack.children.remove(child)

    def respawn_worker(self) -> None:
        from redswitch.cli.launcher import worker_command

        assert self.stack is not None
        self.stack.spawn("worker", worker_command())

    def commands_since(self, before: int) -> list[str]:
        """The command lines the switch got since the ``before``-th, but the channel listings the listener and the
        reconciler read (the listener lists the channels again 1 s and 3 s after it connects)."""
        return [line for line in self.switch.commands()[before:] if not line.startswith("api show channels")]

    def originated(self, marker: str) -> list[str]:
        """dial_ids of every originate (of a call, not a barge) the switch received whose dial_id has ``marker``."""
        found = []
        for command in self.switch.commands():
            if "originate" in command and "&bridge(" in command and marker in command:
                found.append(command.split("redswitch_dial_id=")[1].split(",")[0])
        return found

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return predicate()

    def leftovers(self) -> dict[str, int]:
        """Jobs still sitting in the jobs list or any processing list."""
        keys = [self.settings.jobs_key, *self.client.keys("{" + self.settings.jobs_key + "}.processing.*")]
        return {str(key): n for key in keys if (n := self.client.llen(key))}

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

    def channel_of_side(self, dial_id: str, side: str, timeout: float = 2.0) -> str:
        """The uuid of the live channel of ``dial_id``'s ``side``. A real switch lists a channel (``show channels``,
        filled from its core database) a moment after its events: look again for up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for uuid, channel in self.switch.channels().items():
                variables = channel.variables
                if variables.get("redswitch_dial_id") == dial_id and variables.get("redswitch_side") == side:
                    return str(uuid)
            if time.monotonic() >= deadline:
                raise KeyError(f"no live channel for {dial_id} side {side}")
            time.sleep(0.1)


def hung_up(*sides: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: {e.get("side") for e in events if e["type"] == "hangup-event"} >= set(sides)


def has(kind: str, side: str | None = None) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(e["type"] == kind and (side is None or e.get("side") == side) for e in events)

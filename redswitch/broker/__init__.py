"""The Dramatiq broker, built from the settings before any actor is declared.

Dramatiq falls back to a broker of its own choosing when an actor is declared before ``set_broker``; the
actors package imports this module first so that never happens. ``BROKER_URL=stub://`` gives a StubBroker
for unit tests of single actors.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

from redswitch.broker.waking import WakingRedisBroker
from redswitch.config import Settings
from redswitch.errors import ConfigError
from redswitch.gc_freeze import SettleHeap
from redswitch.logs import WorkerLogging
from redswitch.store.connection import is_cluster


def build_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.effective_broker_url
    broker: dramatiq.Broker
    if url.startswith("stub://"):
        broker = StubBroker()
        broker.emit_after("process_boot")
    elif url.startswith(("amqp://", "amqps://")):
        try:
            from dramatiq.brokers.rabbitmq import RabbitmqBroker
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise ConfigError(
                "BROKER_URL is amqp:// but pika is not installed (pip install 'dramatiq[rabbitmq]')"
            ) from None
        # Publisher confirms: a message sent by the bridge or a client is on the broker when send() returns.
        broker = RabbitmqBroker(url=url, confirm_delivery=True)
    else:
        _refuse_cluster(settings, url)
        broker = WakingRedisBroker(  # type: ignore[no-untyped-call]
            url=url,
            socket_timeout=settings.pubsub_redis_timeout,
            socket_connect_timeout=settings.pubsub_redis_timeout,
            # A worker killed with SIGKILL holds its fetched messages until another process's maintenance
            # notices its heartbeat is older than this and requeues them.
            heartbeat_timeout=settings.broker_heartbeat_timeout,
            maintenance_chance=settings.broker_maintenance_chance,
        )
        broker.carries_state_writes = url == settings.pubsub_redis_url
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(SettleHeap())
    broker.add_middleware(WorkerLogging(settings))
    if os.environ.get("dramatiq_prom_port"):
        broker.add_middleware(_worker_prometheus())
    return broker


def _refuse_cluster(settings: Settings, url: str) -> None:
    """Dramatiq's Redis broker runs multi-key scripts over its queues: it cannot run on a Redis Cluster.

    Caught at start (the bridge and ``redswitch`` commands exit with a configuration error, the worker does not
    start) rather than as CROSSSLOT errors on the first job.
    """
    if not is_cluster(url, settings.pubsub_redis_timeout):
        return
    if settings.broker_url:
        raise ConfigError(
            "BROKER_URL points at a Redis Cluster, where Dramatiq's Redis broker cannot run: "
            "set BROKER_URL to a single Redis (redis://...) or RabbitMQ (amqp://...)"
        )
    raise ConfigError(
        "PUBSUB_REDIS_URL is a Redis Cluster and BROKER_URL is not set, so the broker would run on the cluster, "
        "where Dramatiq's Redis broker cannot run: set BROKER_URL to a single Redis (redis://...) or RabbitMQ "
        "(amqp://...)"
    )


def _worker_prometheus() -> dramatiq.Middleware:
    """Dramatiq's Prometheus middleware, serving the worker's metrics and ours on ``dramatiq_prom_port``.

    Only for the worker (the variable is Dramatiq's own; set it on the worker alone). Its worker processes write
    metrics to files that the exposition process reads, so prometheus_client must be put in multiprocess mode
    before anything imports it — our own metric definitions included.
    """
    import tempfile

    directory = os.environ.setdefault("dramatiq_prom_db", os.path.join(tempfile.gettempdir(), "redswitch-prom"))
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", directory)
    os.makedirs(directory, exist_ok=True)
    from dramatiq.middleware.prometheus import Prometheus

    return Prometheus()


def send_all(actor: dramatiq.Actor[..., Any], calls: list[tuple[Any, ...]]) -> None:
    """Send one message to ``actor`` per argument tuple: in one round trip when the broker can batch."""
    messages = [actor.message(*args) for args in calls]
    broker = actor.broker
    if isinstance(broker, WakingRedisBroker):
        broker.enqueue_many(messages)
    else:
        for message in messages:
            broker.enqueue(message)


def setup_broker(settings: Settings | None = None) -> dramatiq.Broker:
    """Build the broker for ``settings`` (default: from the environment) and make it Dramatiq's global one."""
    broker = build_broker(settings or Settings.from_env())
    dramatiq.set_broker(broker)
    return broker


class Resender:
    """Sends a job to the ``asp_call`` actor again, by name, on a broker of its own built at the first resend.

    For the listener, which re-sends throttled originates: it must not import the actors (and set up a global
    broker) to do so, and most listeners never need a broker at all.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._broker: dramatiq.Broker | None = None

    def __call__(self, job: dict[str, Any], delay_ms: int) -> None:
        if self._broker is None:
            self._broker = build_broker(self.settings)
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name="redswitch-calls", actor_name="asp_call", args=(job,), kwargs={}, options={}
        )
        self._broker.enqueue(message, delay=delay_ms)

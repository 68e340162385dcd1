"""The framework's ceiling: a Dramatiq actor on the same broker (class and Redis) that only counts its runs."""

from __future__ import annotations

import os

import dramatiq
import redis

from redswitch.broker import setup_broker

broker = setup_broker()
_counter = redis.Redis.from_url(os.environ["PUBSUB_REDIS_URL"])


@dramatiq.actor(queue_name="bench-noop", max_retries=0)
def noop(job: dict[str, str]) -> None:
    _counter.incr("bench:noop")

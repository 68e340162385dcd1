"""Short garbage-collector pauses for the long-running processes.

A full collection walks every tracked object; in the worker that is the whole of Dramatiq, gevent, redis-py and
prometheus_client, and one took 16 ms under load — a control command that arrived then waited for it.
Everything a process allocates while it starts lives as long as the process, so once started it is moved out of
the collector's view (``gc.freeze``); later collections only walk what the process allocated since.
"""

from __future__ import annotations

import gc

import dramatiq


def settle() -> None:
    """Collect once, then freeze what is left: call when start-up is over, before serving."""
    gc.collect()
    gc.freeze()


class SettleHeap(dramatiq.Middleware):
    """:func:`settle` in each worker process once its threads and connections are up."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        settle()

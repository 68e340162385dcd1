"""Start-up objects are frozen out of the collector's view, in every long-running process."""

from __future__ import annotations

import gc

from redswitch import gc_freeze
from redswitch.broker import build_broker
from redswitch.config import Settings


def test_settle_freezes_what_start_up_allocated() -> None:
    kept = [object() for _ in range(1000)]
    try:
        gc_freeze.settle()
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()


def test_every_worker_process_settles_its_heap_after_boot() -> None:
    broker = build_broker(Settings(broker_url="stub://"))
    assert any(isinstance(middleware, gc_freeze.SettleHeap) for middleware in broker.middleware)

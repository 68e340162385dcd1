"""``redswitch schedule``: the periodic housekeeping that keeps Redis honest about FreeSWITCH.

Events can be lost: the listener may be down while a call ends, or FreeSWITCH may restart and take its
channels with it. Consumers would then see a call that never hangs up. The scheduler, on an interval:

* **reconciles** every call Redis holds as active with the channels FreeSWITCH really has, publishing the
  missing ``answer-event`` s (a channel FreeSWITCH shows answered that the active list lacks) and the
  missing ``hangup-event`` s (marked with a ``reason`` so nobody mistakes them for FreeSWITCH's own) and
  ending calls that have no channel left; it counts (and logs) channels of ours that Redis has forgotten;
* **bounds the dead-job list** to ``DEAD_MAX`` entries, dropping the oldest;
* **watches FreeSWITCH's HEARTBEAT** on an event connection of its own, for the metrics.

Several schedulers may run for availability; a lease in Redis lets only one act, and another takes over
when its holder stops renewing. Every job runs in one APScheduler worker thread and opens its own ESL
connection, because a greenswitch connection must never be used from two threads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from redswitch import metrics
from redswitch.config import Settings
from redswitch.errors import EslCommandError, EslError, PayloadError
from redswitch.esl.client import EslClient
from redswitch.esl.stream import EventStream
from redswitch.messages import ID_PATTERN
from redswitch.originate import VAR_DIAL_ID
from redswitch.protocol import callstates, commands
from redswitch.services.absences import Absences
from redswitch.store import CallStore, events, leg_uuids, open_store

logger = logging.getLogger(__name__)

#: The cause of a hangup-event the scheduler publishes: FreeSWITCH's own "unspecified" (Q.850 31), because the
#: real cause is unknown; ``reason`` (an extension, as on ``failure``) says the event was reconstructed.
RECONCILED_CAUSE = "NORMAL_UNSPECIFIED"
RECONCILED_REASON = "reconciled: FreeSWITCH no longer has this channel"
#: The ``reason`` of an answer-event the scheduler publishes: FreeSWITCH shows the channel answered, Redis did not.
RECONCILED_ANSWER_REASON = "reconciled: FreeSWITCH shows this channel answered"


class Lease:
    """A lease in Redis: ``hold()`` takes or renews it and says whether this holder has it."""

    def __init__(self, store: CallStore, holder: str, ttl: float, key: str = "") -> None:
        self.store, self.holder = store, holder
        self.key = key or store.keys.scheduler_lease()
        self.ttl_ms = int(ttl * 1000)

    def hold(self) -> bool:
        return self.store.hold_lease(self.key, self.holder, self.ttl_ms)

    def release(self) -> None:
        """Give the lease up now (on a clean stop), so another scheduler need not wait for it to expire."""
        self.store.release_lease(self.key, self.holder)


@dataclasses.dataclass
class Report:
    """What one reconciliation pass did."""

    ended: list[str] = dataclasses.field(default_factory=list)
    hung_up: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    answered: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    orphans: dict[str, str] = dataclasses.field(default_factory=dict)  # channel uuid -> dial_id


class Reconciler:
    """Compares the active calls in Redis with FreeSWITCH's channels and repairs Redis.

    A side is only reported lost after FreeSWITCH has lacked its leg for ``RECONCILE_GRACE`` seconds (across
    passes), and a call whose record is not yet ``sent`` is left to its actor: both keep the scheduler off
    calls that are just starting. ``missing`` carries those first sightings from pass to pass.
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        esl: EslClient | Mapping[str, EslClient | None],
        missing: Absences,
    ):
        """``esl``: one client (a single node), or a client per node name — ``None`` for a node that is lost
        (unreachable for NODE_LOST_AFTER seconds), which then counts as having no channel left."""
        self.settings = settings
        self.client = client
        first = settings.nodes()[0].name
        self.esls = dict(esl) if isinstance(esl, Mapping) else {first: esl}
        self.first_node = first
        self.channel_nodes: dict[str, str] = {}
        #: Channels FreeSWITCH shows answered (a ``callstate`` of ``callstates.ANSWERED``).
        self.answered_channels: set[str] = set()
        self.store = open_store(client, settings)
        self.missing = missing
        self.foreign: set[str] = set()

    def run_once(self) -> Report:
        report = Report()
        channels = self._channels()
        known: set[str] = set()
        for dial_id in self.store.active_calls():
            record = self.store.call_record(dial_id)
            known.update(leg_uuids(record).values())
            self._check_call(dial_id, record, channels, report)
        self.missing.end_look()
        self._find_orphans(channels - known, report)
        return report

    def _channels(self) -> set[str]:
        """The uuids of every channel the reachable nodes have (``show channels as json``), noting each one's node."""
        for node, esl in self.esls.items():
            if esl is None:
                continue
            data = json.loads(esl.api("show channels as json") or "{}")
            rows = data.get("rows", [])
            self.channel_nodes.update({row["uuid"]: node for row in rows})
            self.answered_channels.update(row["uuid"] for row in rows if row.get("callstate") in callstates.ANSWERED)
        return set(self.channel_nodes)

    def _check_call(self, dial_id: str, record: dict[str, str], channels: set[str], report: Report) -> None:
        if not record:  # the record expired (24 h): nothing left to tell, only the stale membership
            logger.warning("dial_id=%s active without a call record; ending it", dial_id)
            self.store.end_call(dial_id, "")
            report.ended.append(dial_id)
            return
        if record.get("state") != "sent" or record.get("node", self.first_node) not in self.esls:
            return  # still being dialled, or on a node we could not ask this time
        legs = leg_uuids(record)
        up = {side for side, leg in legs.items() if leg in self.answered_channels}
        answered = {side for side in up if self._missing_long_enough(f"{dial_id}/{side}/answer")}
        if answered:
            self._repair_answers(dial_id, record, answered, report)
        gone = {side for side, leg in legs.items() if leg not in channels}
        lost = {side for side in gone if self._missing_long_enough(f"{dial_id}/{side}")}
        if lost:
            self._repair(dial_id, record, lost, call_over=lost == set(legs), report=report)

    def _repair_answers(self, dial_id: str, record: dict[str, str], up: set[str], report: Report) -> None:
        """Publish the answers the listener missed (channels FreeSWITCH shows answered that the active list lacks),
        each once, before any hangup of that side."""
        sides = self.store.repair_answers(dial_id, record, up, _reconciled_answer)
        for side in sides or []:
            logger.warning("dial_id=%s side %s answered in FreeSWITCH; answer-event published", dial_id, side)
            report.answered.append((dial_id, side))
        metrics.SIDES_RECONCILED.inc(len(sides or []))

    def _missing_long_enough(self, key: str) -> bool:
        return self.missing.missing_for(key, time.monotonic()) >= self.settings.reconcile_grace

    def _repair(self, dial_id: str, record: dict[str, str], lost: set[str], call_over: bool, report: Report) -> None:
        """Publish the lost sides' hangups (side 0 last: it ends the call), with the state change they describe."""
        sides = self.store.repair(dial_id, record, lost, call_over, _reconciled_hangup)
        if sides is not None:
            self._note(dial_id, sides, call_over, report)

    def _note(self, dial_id: str, sides: list[str], call_over: bool, report: Report) -> None:
        for side in sides:
            logger.warning("dial_id=%s side %s lost by FreeSWITCH; hangup-event published", dial_id, side)
            report.hung_up.append((dial_id, side))
        metrics.SIDES_RECONCILED.inc(len(sides))
        if call_over:
            logger.warning("dial_id=%s no channel left in FreeSWITCH; call ended", dial_id)
            report.ended.append(dial_id)
            metrics.CALLS_RECONCILED.inc()

    def _find_orphans(self, unknown: set[str], report: Report) -> None:
        """Channels Redis has no active call for: ours if they carry a ``redswitch_dial_id``."""
        self.foreign &= unknown
        for channel in sorted(unknown - self.foreign):
            try:
                esl = self.esls[self.channel_nodes[channel]]
                assert esl is not None
                dial_id = esl.api(commands.uuid_getvar(channel, VAR_DIAL_ID)).strip()
            except (EslCommandError, PayloadError):
                continue  # gone meanwhile, or not a uuid we would send back
            if ID_PATTERN.fullmatch(dial_id) and dial_id != "_undef_":
                logger.warning("dial_id=%s FreeSWITCH has channel %s but Redis has no active call", dial_id, channel)
                report.orphans[channel] = dial_id
            else:
                self.foreign.add(channel)
        metrics.ORPHAN_CHANNELS.set(len(report.orphans))


def _reconciled_answer(side: str) -> dict[str, Any]:
    return events.answer(side, reason=RECONCILED_ANSWER_REASON)


def _reconciled_hangup(side: str) -> dict[str, Any]:
    return events.hangup(side, RECONCILED_CAUSE, reason=RECONCILED_REASON)


class HeartbeatWatch:
    """Keeps an event connection subscribed to HEARTBEAT; feeds the ESL-up and last-heartbeat gauges.

    With several nodes it watches the first one of ``ESL_NODES`` (the others are judged by the reconciler).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.last_heartbeat = 0.0
        metrics.HEARTBEAT_AGE.set_function(self.age)

    def age(self) -> float:
        """Seconds since the last HEARTBEAT, or -1 before the first one."""
        return time.time() - self.last_heartbeat if self.last_heartbeat else -1.0

    def run(self, stop: threading.Event) -> None:
        delay, connected_before = 0.1, False
        while not stop.is_set():
            node = self.settings.nodes()[0]
            stream = EventStream(node.host, node.port, node.password, self.settings.esl_timeout)
            try:
                stream.connect()
                stream.subscribe(["HEARTBEAT"])
                metrics.ESL_UP.set(1)
                if connected_before:
                    metrics.ESL_RECONNECTS.inc()
                connected_before, delay = True, 0.1
                self._pump(stream, stop)
            except EslError as exc:
                logger.warning("ESL event connection: %s; retrying in %.1fs", exc, delay)
            finally:
                metrics.ESL_UP.set(0)
                stream.close()
            stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _pump(self, stream: EventStream, stop: threading.Event) -> None:
        while not stop.is_set():
            for event in stream.read(timeout=0.5):
                if event.name == "HEARTBEAT":
                    self.last_heartbeat = time.time()
                    metrics.LAST_HEARTBEAT.set(self.last_heartbeat)


class Scheduler:
    """The jobs, each acting only while this scheduler holds the lease."""

    def __init__(self, settings: Settings, client: redis.Redis, holder: str | None = None) -> None:
        self.settings = settings
        self.client = client
        self.holder = holder or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.store = open_store(client, settings)
        self.lease = Lease(self.store, self.holder, settings.scheduler_lease)
        self.missing = Absences()
        self.unreachable_since: dict[str, float] = {}

    def lead(self) -> bool:
        """Take or renew the lease; True when this scheduler may act."""
        try:
            held = self.lease.hold()
        except redis.exceptions.RedisError as exc:
            logger.warning("scheduler %s: Redis unavailable (%s)", self.holder, exc)
            held = False
        metrics.SCHEDULER_LEADER.set(1 if held else 0)
        return held

    def reconcile(self) -> Report | None:
        if not self.lead():
            self.missing.clear()  # another scheduler acts: our sightings would be stale on takeover
            return None
        esls = self._connect_nodes()
        try:
            return Reconciler(self.settings, self.client, esls, self.missing).run_once()
        except (EslError, redis.exceptions.RedisError, ValueError) as exc:
            logger.warning("reconciliation skipped: %s", exc)
            return None
        finally:
            for esl in esls.values():
                if esl is not None:
                    esl.close()

    def _connect_nodes(self) -> dict[str, EslClient | None]:
        """A client per reachable node; ``None`` for a node unreachable for NODE_LOST_AFTER (its calls are lost);
        a node unreachable for less is left out, so its calls are not judged this pass."""
        s = self.settings
        esls: dict[str, EslClient | None] = {}
        for node in s.nodes():
            esl = EslClient(node.host, node.port, node.password, s.esl_timeout)
            try:
                esl.connect()
            except EslError as exc:
                since = self.unreachable_since.setdefault(node.name, time.monotonic())
                logger.warning("FreeSWITCH node %s unreachable for %.0fs: %s", node.name, time.monotonic() - since, exc)
                if time.monotonic() - since >= s.node_lost_after:
                    esls[node.name] = None
                continue
            self.unreachable_since.pop(node.name, None)
            esls[node.name] = esl
        return esls

    def trim_dead(self) -> int:
        """Keep the dead list within DEAD_MAX entries (0: unbounded); return how many were dropped."""
        if not self.settings.dead_max or not self.lead():
            return 0
        key = self.settings.effective_dead_key
        try:
            dropped = self.store.trim_dead(self.settings.dead_max)
            metrics.DEAD_LENGTH.set(self.client.llen(key))
        except redis.exceptions.RedisError as exc:
            logger.warning("dead list not trimmed: %s", exc)
            return 0
        if dropped:
            logger.warning("dropped the %d oldest entries of %s (DEAD_MAX=%d)", dropped, key, self.settings.dead_max)
            metrics.DEAD_DROPPED.inc(dropped)
        return dropped

    def run(self, stop: threading.Event) -> None:
        """Run the jobs (one thread) and the heartbeat watch until ``stop`` is set; then give up the lease."""
        s = self.settings
        watch = threading.Thread(target=HeartbeatWatch(s).run, args=(stop,), name="heartbeat", daemon=True)
        watch.start()
        background = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        background.add_job(self.lead, "interval", seconds=s.scheduler_lease / 3, id="lease")
        background.add_job(self.reconcile, "interval", seconds=s.reconcile_interval, id="reconcile")
        background.add_job(self.trim_dead, "interval", seconds=s.reconcile_interval, id="trim-dead")
        logger.info("scheduler %s: reconciling every %.1fs", self.holder, s.reconcile_interval)
        background.start()
        stop.wait()
        background.shutdown(wait=True)
        watch.join(timeout=2)
        self._release()

    def _release(self) -> None:
        try:
            self.lease.release()
        except redis.exceptions.RedisError:
            pass  # it expires on its own
        metrics.SCHEDULER_LEADER.set(0)

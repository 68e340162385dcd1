"""``redswitch schedule``: the periodic housekeeping that keeps Redis honest about FreeSWITCH.

Events can be lost: the listener may be down while a call ends, or FreeSWITCH may restart and take its
channels with it. Consumers would then see a call that never hangs up. The scheduler, on an interval:

* **reconciles** every call Redis holds as active with the channels FreeSWITCH really has, publishing the
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
from redswitch.esl import EslClient
from redswitch.esl_stream import EventStream
from redswitch.messages import ID_PATTERN
from redswitch.originate import VAR_DIAL_ID
from redswitch.protocol import commands
from redswitch.redis_client import reply_text
from redswitch.state import CallState, Keys

logger = logging.getLogger(__name__)

#: The lease key: holds the id of the scheduler that acts, expiring unless renewed.
LEASE_KEY = "redswitch:scheduler:lease"
#: The cause of a hangup-event the scheduler publishes: FreeSWITCH's own "unspecified" (Q.850 31), because the
#: real cause is unknown; ``reason`` (an extension, as on ``failure``) says the event was reconstructed.
RECONCILED_CAUSE = "NORMAL_UNSPECIFIED"
RECONCILED_REASON = "reconciled: FreeSWITCH no longer has this channel"
#: Call record fields of a barger; cleared when the barger's leg is gone, as the listener does.
BARGER_FIELDS = ("barger_uuid", "barger_mode", "barger_prev_mode", "barger_answered")
#: Record fields naming each side's leg.
LEG_FIELDS = {"0": "uuid0", "1": "uuid1", "2": "barger_uuid"}

# Take the lease if free, or renew it if ours: one script, so two schedulers can never both hold it.
_HOLD_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Drop the oldest entries beyond ARGV[1] (the bridge RPUSHes, so the oldest are on the left).
_TRIM_SCRIPT = """
local excess = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if excess > 0 then
  redis.call('LTRIM', KEYS[1], excess, -1)
  return excess
end
return 0
"""


class Lease:
    """A lease in Redis: ``hold()`` takes or renews it and says whether this holder has it."""

    def __init__(self, client: redis.Redis, holder: str, ttl: float, key: str = LEASE_KEY) -> None:
        self.client, self.holder, self.key = client, holder, key
        self.ttl_ms = int(ttl * 1000)

    def hold(self) -> bool:
        return bool(self.client.eval(_HOLD_SCRIPT, 1, self.key, self.holder, self.ttl_ms))

    def release(self) -> None:
        """Give the lease up now (on a clean stop), so another scheduler need not wait for it to expire."""
        self.client.eval(_RELEASE_SCRIPT, 1, self.key, self.holder)


@dataclasses.dataclass
class Report:
    """What one reconciliation pass did."""

    ended: list[str] = dataclasses.field(default_factory=list)
    hung_up: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    orphans: dict[str, str] = dataclasses.field(default_factory=dict)  # channel uuid -> dial_id


class Reconciler:
    """Compares the active calls in Redis with FreeSWITCH's channels and repairs Redis.

    A side is only reported lost after FreeSWITCH has lacked its leg for ``RECONCILE_GRACE`` seconds (across
    passes), and a call whose record is not yet ``sent`` is left to its actor: both keep the scheduler off
    calls that are just starting. ``missing_since`` carries those first sightings from pass to pass.
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        esl: EslClient | Mapping[str, EslClient | None],
        missing_since: dict[str, float],
    ):
        """``esl``: one client (a single node), or a client per node name — ``None`` for a node that is lost
        (unreachable for NODE_LOST_AFTER seconds), which then counts as having no channel left."""
        self.settings = settings
        self.client = client
        first = settings.nodes()[0].name
        self.esls = dict(esl) if isinstance(esl, Mapping) else {first: esl}
        self.first_node = first
        self.channel_nodes: dict[str, str] = {}
        self.state = CallState(client, settings)
        self.keys = Keys(settings)
        self.missing_since = missing_since
        self.foreign: set[str] = set()

    def run_once(self) -> Report:
        report = Report()
        channels = self._channels()
        known: set[str] = set()
        seen_missing: set[str] = set()
        for dial_id in sorted(reply_text(m) for m in self.client.smembers(Keys.active_calls())):
            record = self.state.call_record(dial_id)
            known.update(record[field] for field in LEG_FIELDS.values() if record.get(field))
            self._check_call(dial_id, record, channels, report, seen_missing)
        for key in set(self.missing_since) - seen_missing:
            del self.missing_since[key]
        self._find_orphans(channels - known, report)
        return report

    def _channels(self) -> set[str]:
        """The uuids of every channel the reachable nodes have (``show channels as json``), noting each one's node."""
        for node, esl in self.esls.items():
            if esl is None:
                continue
            data = json.loads(esl.api("show channels as json") or "{}")
            self.channel_nodes.update({row["uuid"]: node for row in data.get("rows", [])})
        return set(self.channel_nodes)

    def _check_call(
        self, dial_id: str, record: dict[str, str], channels: set[str], report: Report, seen_missing: set[str]
    ) -> None:
        if not record:  # the record expired (24 h): nothing left to tell, only the stale membership
            logger.warning("dial_id=%s active without a call record; ending it", dial_id)
            self.state.end_call(dial_id)
            report.ended.append(dial_id)
            return
        if record.get("state") != "sent" or record.get("node", self.first_node) not in self.esls:
            return  # still being dialled, or on a node we could not ask this time
        legs = {side: record[field] for side, field in LEG_FIELDS.items() if record.get(field)}
        gone = {side for side, leg in legs.items() if leg not in channels}
        lost = {side for side in gone if self._missing_long_enough(f"{dial_id}/{side}", seen_missing)}
        if lost:
            self._repair(dial_id, record, lost, call_over=lost == set(legs), report=report)

    def _missing_long_enough(self, key: str, seen_missing: set[str]) -> bool:
        seen_missing.add(key)
        first = self.missing_since.setdefault(key, time.monotonic())
        return time.monotonic() - first >= self.settings.reconcile_grace

    def _repair(self, dial_id: str, record: dict[str, str], lost: set[str], call_over: bool, report: Report) -> None:
        """Publish the lost sides' hangups (side 0 last: it ends the call), atomically with the state change."""
        org_id, user_id = record["org_id"], record["user_id"]
        active_key = self.keys.active(dial_id, org_id, user_id)
        if not self.state.atomic:
            self._repair_unwatched(dial_id, record, lost, call_over, report)
            return
        with self.client.pipeline(transaction=True) as pipe:
            # The listener touches both keys on every event of the call: any event meanwhile aborts the repair.
            pipe.watch(Keys.call(dial_id), active_key)  # type: ignore[no-untyped-call]
            listed = {reply_text(item).partition(".")[2] for item in pipe.lrange(active_key, 0, -1)}
            if not pipe.sismember(Keys.active_calls(), dial_id):
                return
            sides = _sides_to_hang_up(lost, listed, call_over)
            if not (sides or call_over or "2" in lost):
                return  # e.g. side 1 not dialled yet: nothing is owed
            pipe.multi()
            self._stage_repair(pipe, record, dial_id, sides, lost, call_over)
            try:
                pipe.execute()
            except redis.exceptions.WatchError:
                return  # an event of this call arrived meanwhile: look again next pass
        self._note(dial_id, sides, call_over, report)

    def _repair_unwatched(
        self, dial_id: str, record: dict[str, str], lost: set[str], call_over: bool, report: Report
    ) -> None:
        """``_repair`` on a Redis Cluster, where no WATCH spans the call's keys: read, then apply in order.

        A listener event of the call landing between the read and the writes is not noticed; at worst a side's
        hangup-event is published twice (the reconciler only acts on legs FreeSWITCH lost RECONCILE_GRACE ago).
        """
        active_key = self.keys.active(dial_id, record["org_id"], record["user_id"])
        listed = {reply_text(item).partition(".")[2] for item in self.client.lrange(active_key, 0, -1)}
        if not self.client.sismember(Keys.active_calls(), dial_id):
            return
        sides = _sides_to_hang_up(lost, listed, call_over)
        if not (sides or call_over or "2" in lost):
            return
        stage = self.state.transaction()
        self._stage_repair(stage, record, dial_id, sides, lost, call_over)
        stage.execute()
        self._note(dial_id, sides, call_over, report)

    def _stage_repair(
        self, pipe: Any, record: dict[str, str], dial_id: str, sides: list[str], lost: set[str], call_over: bool
    ) -> None:
        extra = {"cause": RECONCILED_CAUSE, "reason": RECONCILED_REASON}
        for side in sides:
            self.state.side_hung_up(dial_id, record["org_id"], record["user_id"], side, extra, pipe)
        if "2" in lost:
            self.state.clear_call_fields(dial_id, *BARGER_FIELDS, pipe=pipe)
        if call_over:
            self.state.end_call(dial_id, pipe)

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


def _sides_to_hang_up(lost: set[str], listed: set[str], call_over: bool) -> list[str]:
    """Lost sides whose hangup consumers still wait for, side 0 last.

    Answered sides are listed; side 0's hangup is owed while the call is active (the listener ends the call on
    it); the barger's leg has a hangup owed whenever it existed. A side 1 never answered and never listed may
    never have been dialled, so nothing is invented for it.
    """
    owed = {side for side in lost if side in listed or side in ("0", "2")}
    if call_over:
        owed |= listed | {"0"}
    return sorted(owed, key=lambda side: (side == "0", side))


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
        self.lease = Lease(client, self.holder, settings.scheduler_lease)
        self.missing_since: dict[str, float] = {}
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
            self.missing_since.clear()  # another scheduler acts: our sightings would be stale on takeover
            return None
        esls = self._connect_nodes()
        try:
            return Reconciler(self.settings, self.client, esls, self.missing_since).run_once()
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
            dropped = int(self.client.eval(_TRIM_SCRIPT, 1, key, self.settings.dead_max))
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

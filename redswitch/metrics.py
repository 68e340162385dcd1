"""Prometheus metrics: every metric object Redswitch exports, and the HTTP server that exposes them.

All metrics live here, so their names and labels are defined once and the processes only increment them.
Each long-running process (bridge, listener, scheduler) calls :func:`start_metrics_server` with its settings;
``METRICS_PORT=0`` (the default) exports nothing. Label values are always from small fixed sets (event types,
hangup causes, command types), never ids, so the number of series stays bounded.

The worker (``dramatiq redswitch.actors``) is Dramatiq's process: its metrics are exported by Dramatiq's own
Prometheus middleware (see docs/operations.md).
"""

from __future__ import annotations

import logging
import re
import time

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from redswitch.config import Settings

logger = logging.getLogger(__name__)

#: Latency buckets in seconds: most hand-overs take milliseconds; a backlog shows up in the upper ones.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

JOBS_TAKEN = Counter("redswitch_jobs_taken", "Legacy jobs the bridge took from the jobs list.")
JOBS_ENQUEUED = Counter("redswitch_jobs_enqueued", "Legacy jobs the bridge handed to the asp_call actor.")
JOBS_DEAD = Counter("redswitch_jobs_dead", "Jobs parked in the dead list, by cause.", ["cause"])
CALLS_ORIGINATED = Counter("redswitch_calls_originated", "Originates FreeSWITCH accepted as background jobs.")
CALLS_FAILED = Counter("redswitch_calls_failed", "failure events published, by cause.", ["cause"])
EVENTS_PUBLISHED = Counter("redswitch_events_published", "Events the listener published, by type.", ["type"])
CONTROL_MESSAGES = Counter(
    "redswitch_control_messages", "Control messages the relay handled, by type and outcome.", ["type", "outcome"]
)
CONTROL_COMMANDS = Counter(
    "redswitch_control_commands", "Control commands the actors executed, by type and outcome.", ["type", "outcome"]
)
ESL_RECONNECTS = Counter("redswitch_esl_reconnects", "ESL connections opened again after a failure or a drop.")
JOB_TO_ORIGINATE = Histogram(
    "redswitch_job_to_originate_seconds",
    "From the job's enqueue to its originate handed to FreeSWITCH.",
    buckets=LATENCY_BUCKETS,
)
EVENT_TO_PUBLISH = Histogram(
    "redswitch_event_to_publish_seconds",
    "From a batch of ESL events read off the socket to its events published on Redis.",
    buckets=LATENCY_BUCKETS,
)
CALLS_RECONCILED = Counter(
    "redswitch_calls_reconciled", "Calls Redis held as active that FreeSWITCH no longer had, ended by the scheduler."
)
SIDES_RECONCILED = Counter("redswitch_sides_reconciled", "hangup-events the scheduler published for lost sides.")
ORPHAN_CHANNELS = Gauge(
    "redswitch_orphan_channels", "FreeSWITCH channels with a redswitch_dial_id that Redis holds no active call for."
)
DEAD_DROPPED = Counter("redswitch_dead_dropped", "Oldest dead-list entries dropped to keep it within DEAD_MAX.")
DEAD_LENGTH = Gauge("redswitch_dead_length", "Entries in the dead list at the last check.")
ESL_UP = Gauge("redswitch_esl_up", "1 while the scheduler's ESL event connection is up, else 0.")
LAST_HEARTBEAT = Gauge(
    "redswitch_freeswitch_last_heartbeat_timestamp_seconds", "Unix time of FreeSWITCH's last HEARTBEAT event."
)
HEARTBEAT_AGE = Gauge(
    "redswitch_freeswitch_heartbeat_age_seconds", "Seconds since FreeSWITCH's last HEARTBEAT (-1: none seen yet)."
)
EVENTS_RECOVERED = Counter(
    "redswitch_events_recovered",
    "answer-events and hangup-events a listener reconstructed from a node's channels after a gap in following it.",
)
LISTENER_TAKES = Counter("redswitch_listener_takes", "Leases on FreeSWITCH nodes this listener took (and followed).")
LISTENER_FOLLOWS = Gauge(
    "redswitch_listener_follows", "1 while this listener holds the lease on the node and follows it, else 0.", ["node"]
)
LISTENER_LEASE_AGE = Gauge(
    "redswitch_listener_lease_age_seconds",
    "Seconds since this listener last renewed its lease on the node (-1: it does not hold it).",
    ["node"],
)
SCHEDULER_LEADER = Gauge("redswitch_scheduler_leader", "1 while this scheduler holds the lease and acts, else 0.")


def start_metrics_server(settings: Settings) -> int:
    """Serve ``/metrics`` on ``METRICS_HOST:METRICS_PORT`` in a daemon thread; return the port (0: disabled)."""
    if not settings.metrics_port:
        return 0
    start_http_server(settings.metrics_port, addr=settings.metrics_host)
    logger.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return settings.metrics_port


def seconds_since(epoch: float) -> float:
    """Elapsed seconds since a Unix time, never negative (clocks of two hosts may disagree slightly)."""
    return max(0.0, time.time() - epoch)


_CAUSE = re.compile(r"[A-Z][A-Z0-9_]{0,47}")


def cause_label(cause: str) -> str:
    """A hangup cause as a label value: cause names pass, anything else (free text) becomes ``OTHER``."""
    return cause if _CAUSE.fullmatch(cause) else "OTHER"

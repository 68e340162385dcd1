"""Admission control: pace originations to what the switch and the carriers accept, cap an org's concurrent calls.

FreeSWITCH refuses an originate past its ``sessions-per-second`` or ``max-sessions`` with
``-ERR DESTINATION_OUT_OF_ORDER`` and no channel at all, so a burst that is not paced here is throttled silently
by the switch. Every limit lives in Redis, shared by every worker process, and is checked by the store in one
script per attempt on a single Redis (``redswitch/store/lua/admit.lua``: ``org.lua`` then ``rate.lua``), in one per
slot on a cluster:

* **Org concurrency** (``ORG_MAX_CALLS``): a slot per call, held from the originate until the call ends. A slot
  counts only while its dial_id is among the active calls — the set every call-ending path (the listener's
  side-0 hangup, ``failure``, the reconciler) leaves — so a slot can never leak past its call. Jobs over the
  limit wait in a FIFO per org; the caller gets one ``queued`` event when its job first waits.
* **Sessions per second** to the switch (``SWITCH_CPS``) and per gateway (``GATEWAY_CPS``): a sliding log of
  the sessions really started, over a window a little longer than FreeSWITCH's second so that the jitter between
  our clock and the switch's cannot push two windows' worth into one. A click-to-call costs **two sessions**:
  side 0 at the originate and side 1 when side 0 answers; both are counted at the originate.
  Deferred jobs get a slot in a schedule (one per ``window * 2 / limit``) so that a burst goes out in order and
  evenly instead of retrying all at once.

A deferred job is not failed and not retried: its record goes back to ``claimed`` (FreeSWITCH surely does not
have it) and its message is sent again with a delay. A second copy of the message (a redelivery) is harmless:
only one run can move the record from ``claimed`` to ``dialling`` (:func:`begin_dial`).

Throttled originates (``-ERR`` with no side 0 ever seen, a retryable cause) are sent again by the listener
through :func:`retry_throttled`; a result after side 0 existed is reported and never retried.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from redswitch.config import Settings
from redswitch.messages import AspCall
from redswitch.store import CallStore, Decision, Limit

logger = logging.getLogger(__name__)

#: A waiting job asks again this often (it is the delay between a freed org slot and the next call going out).
POLL_MS = 250
#: Waits up to this long are slept in the worker thread; longer ones give the thread back.
SHORT_WAIT = 0.05
#: Causes that mean "try again later" when the switch refused the originate before side 0 existed.
RETRYABLE_CAUSES = frozenset(
    {
        "DESTINATION_OUT_OF_ORDER",
        "NORMAL_TEMPORARY_FAILURE",
        "SWITCH_CONGESTION",
        "NETWORK_OUT_OF_ORDER",
        "RECOVERY_ON_TIMER_EXPIRE",
        "NORMAL_CIRCUIT_CONGESTION",
        "ESL_UNREACHABLE",
    }
)
#: Backoff of the listener's re-send of a throttled originate: first delay, cap.
THROTTLE_BACKOFF = (0.5, 10.0)


def is_retryable(cause: str) -> bool:
    """Whether a cause is transient (worth another attempt later), reported beside ``cause`` in events."""
    return cause in RETRYABLE_CAUSES


#: The key a listener's re-sent job carries: which throttle retry it is.
RETRY_KEY = "throttle_retry"


class Limits:
    """The limits of the settings, parsed once per process (each call is checked against them)."""

    def __init__(self, settings: Settings) -> None:
        self.switch_cps = settings.switch_cps
        self.gateways = settings.gateway_cps_limits()
        self.orgs = settings.org_max_calls_limits()
        self.default_node = f"{settings.esl_url}:{settings.esl_port}"

    def org_max(self, org_id: str) -> int:
        return self.orgs.get(org_id, self.orgs.get("*", 0))

    def rates(self, call: AspCall, node: str) -> list[Limit]:
        """The sessions-per-second limiters a call on ``node`` counts against: the switch's, then its gateway's."""
        limits = [Limit("switch", node, self.switch_cps)] if self.switch_cps > 0 else []
        gateway = self.gateways.get(call.call_provider, self.gateways.get("*", 0))
        return limits + ([Limit("gateway", call.call_provider, gateway)] if gateway > 0 else [])


def admit(store: CallStore, limits: Limits, call: AspCall, node: str, resend: Callable[[int], object]) -> bool:
    """True: dial now. False: the job was deferred — its record is ``claimed`` again and ``resend(delay_ms)`` ran —
    or it was cancelled (a hangup while it waited: never dialled).

    Short waits (a few ms to the next free session) are slept; anything longer gives the worker thread back.
    """
    node = node or limits.default_node
    decision = _check(store, limits, call, node)
    while decision.verdict == "wait" and decision.delay <= SHORT_WAIT:
        time.sleep(decision.delay)
        decision = _check(store, limits, call, node)
    if decision.verdict == "go":
        return True
    if not store.defer(call.dial_id):
        logger.info("dial_id=%s cancelled while it waited; not dialled", call.dial_id)
        return False
    delay = POLL_MS / 1000 if decision.verdict == "queued" else decision.delay
    resend(max(1, math.ceil(delay * 1000)))
    if decision.announced:
        logger.info("dial_id=%s queued (%s), position %d", call.dial_id, decision.reason, decision.position)
    return False


def _check(store: CallStore, limits: Limits, call: AspCall, node: str) -> Decision:
    return store.admit(call.dial_id, call.org_id, call.user_id, limits.org_max(call.org_id), limits.rates(call, node))


def begin_dial(store: CallStore, dial_id: str, record: dict[str, str]) -> bool:
    """Move the record from the state this run read to ``dialling``; False when another run got there first."""
    return store.begin_dial(dial_id, record.get("state", ""), record.get("dialling_since", ""), f"{time.time():.3f}")


def take_retry(store: CallStore, dial_id: str, job: dict[str, object]) -> dict[str, str] | None:
    """A listener's re-send of a throttled originate: the record to dial from, or None (stale, or taken)."""
    retry = job.pop(RETRY_KEY, None)
    if not isinstance(retry, int):
        return None
    return store.take_retry(dial_id, retry)


def job_field(call: AspCall) -> str:
    """The job as stored in the call record, so that the listener can send a throttled originate again."""
    return json.dumps({"type": "asp-call", **call.to_dict()})


#: Sends a job to the ``asp_call`` actor again after a delay in ms (the listener's broker does it).
Resend = Callable[[dict[str, Any], int], object]


def retry_throttled(
    store: CallStore, settings: Settings, dial_id: str, job_uuid: str, cause: str, resend: Resend
) -> bool:
    """The listener's side: a refused originate whose side 0 never existed is sent again, with backoff.

    True when the attempt was put back and ``resend`` ran; False: report it (not retryable, or retried out).
    """
    if not is_retryable(cause):
        return False
    found = store.note_throttled(dial_id, job_uuid, settings.throttle_retries)
    if found is None:
        return False
    attempt, job = found
    job[RETRY_KEY] = attempt
    first, cap = THROTTLE_BACKOFF
    delay_ms = int(min(cap, first * 2 ** (attempt - 1)) * 1000)
    resend(job, delay_ms)
    logger.warning(
        "dial_id=%s originate refused (%s) before side 0 existed; retry %d in %d ms", dial_id, cause, attempt, delay_ms
    )
    return True

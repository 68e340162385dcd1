"""Jobs and control messages used across tests."""

from __future__ import annotations

import json
from typing import Any

from redswitch.cli.launcher import SEED_JOB as DEMO_SEED_JOB

#: The original README's example job, exactly as printed there (with its trailing comma).
SEED_JOB_TEXT = """{
    "type": "asp-call",
    "call_provider": "talk_call_provider",
    "callee_number": "1415697098",
    "caller_id_lega": "15105625882",
    "caller_id_legb": "14157697098",
    "caller_number": "15105625882",
    "dial_id": "talkiq_dial_id",
    "org_id":  "talkiq_org_id",
    "user_id": "talkiq_user_id",
}"""

#: The same job as a dict: what the demo pushes too.
SEED_JOB: dict[str, str] = dict(DEMO_SEED_JOB)

JOB_FIELDS = [
    "call_provider",
    "callee_number",
    "caller_id_lega",
    "caller_id_legb",
    "caller_number",
    "dial_id",
    "org_id",
    "user_id",
]

#: Fragments that would break out of a channel variable, an endpoint, an app argument or the command line.
INJECTIONS = [
    ";",
    ",",
    "{",
    "}",
    "[",
    "]",
    "&",
    "'",
    " ",
    "\n",
    "\r\n\r\napi hupall",
    "\n\napi uuid_kill x",
    ")",
    "(",
    "|",
    "^",
    "%0A",
    "=x,dial_id=y",
    "}sofia/gateway/x/1 &park(",
    "\t",
    "\x00",
]


def job(**overrides: Any) -> dict[str, Any]:
    return {**SEED_JOB, **overrides}


def job_json(**overrides: Any) -> str:
    return json.dumps(job(**overrides))


def next_event(pubsub: Any, timeout: float = 5.0) -> dict[str, Any] | None:
    """The next JSON message on a subscribed pubsub (subscribe confirmations skipped), or None on timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None and message["type"] == "message":
            try:
                data = json.loads(message["data"])
            except (ValueError, RecursionError):
                continue  # something a test published itself
            if isinstance(data, dict):
                return data
    return None

"""The subcommands of ``redswitch``: each registers its parser and its handler ``(args, settings) -> int``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from redswitch import gc_freeze
from redswitch.config import Settings

Subparsers = Any  # argparse's _SubParsersAction is private


def _stop_on_signals() -> threading.Event:
    """An Event set by SIGINT/SIGTERM, so long-running processes stop cleanly."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def add_simulate(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("simulate", help="run the FreeSWITCH ESL simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--password", default="ClueCon")
    parser.add_argument("--scenario", default=None, help="scenario file (JSON), see docs/simulator.md")
    parser.set_defaults(handler=run_simulate)


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from redswitch.simulator import serve

    return serve(args.host, args.port, args.password, args.scenario)


def add_bridge(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("bridge", help="move legacy asp-call jobs from Redis to the actors")
    parser.set_defaults(handler=run_bridge)


def run_bridge(args: argparse.Namespace, settings: Settings) -> int:
    from redswitch.actors import CONTROL_ACTORS, asp_call
    from redswitch.broker import send_all
    from redswitch.metrics import start_metrics_server
    from redswitch.services.bridge import Bridge
    from redswitch.services.relay import Relay
    from redswitch.store.connection import redis_from_settings

    def enqueue(jobs: list[dict[str, str]]) -> None:
        send_all(asp_call, [(job,) for job in jobs])

    bridge = Bridge(settings, redis_from_settings(settings, decode=False), enqueue)

    def forward(actor_name: str, dial_id: str, message: dict[str, str]) -> object:
        return CONTROL_ACTORS[actor_name].send(dial_id, message)

    relay = Relay(redis_from_settings(settings), bridge.store, bridge.bridge_id, forward, bridge.surely_alive)
    start_metrics_server(settings)
    stop = _stop_on_signals()
    relay_thread = threading.Thread(target=relay.run, args=(stop,), name="relay", daemon=True)
    relay_thread.start()
    gc_freeze.settle()
    bridge.run(stop)
    relay_thread.join(timeout=5)
    return 0


def add_listen(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("listen", help="republish FreeSWITCH events on Redis")
    parser.set_defaults(handler=run_listen)


def run_listen(args: argparse.Namespace, settings: Settings) -> int:
    from redswitch.broker import Resender
    from redswitch.metrics import start_metrics_server
    from redswitch.services.listener import Listener
    from redswitch.store.connection import redis_from_settings

    start_metrics_server(settings)
    listener = Listener(settings, redis_from_settings(settings), Resender(settings))
    gc_freeze.settle()
    listener.run(_stop_on_signals())
    return 0


def add_schedule(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("schedule", help="reconcile Redis with FreeSWITCH, bound the dead list")
    parser.set_defaults(handler=run_schedule)


def run_schedule(args: argparse.Namespace, settings: Settings) -> int:
    from redswitch.metrics import start_metrics_server
    from redswitch.services.scheduler import Scheduler
    from redswitch.store.connection import redis_from_settings

    start_metrics_server(settings)
    Scheduler(settings, redis_from_settings(settings)).run(_stop_on_signals())
    return 0


def add_push(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("push", help="push a test job the legacy way (RPUSH on the jobs list)")
    parser.add_argument("kind", choices=["asp-call"])
    parser.add_argument("--caller", required=True, help="side 0: the caller's phone, rung first")
    parser.add_argument("--callee", required=True, help="side 1: the number called")
    parser.add_argument("--caller-id-lega", default=None)
    parser.add_argument("--caller-id-legb", default=None)
    parser.add_argument("--call-provider", default="talk_call_provider")
    parser.add_argument("--dial-id", default=None)
    parser.add_argument("--org-id", default="demo_org")
    parser.add_argument("--user-id", default="demo_user")
    parser.set_defaults(handler=run_push)


def sample_job(caller: str, callee: str, dial_id: str | None = None, **fields: str | None) -> dict[str, str]:
    job = {
        "type": "asp-call",
        "call_provider": fields.get("call_provider") or "talk_call_provider",
        "callee_number": callee,
        "caller_id_lega": fields.get("caller_id_lega") or callee,
        "caller_id_legb": fields.get("caller_id_legb") or caller,
        "caller_number": caller,
        "dial_id": dial_id or f"dial_{uuid.uuid4().hex[:12]}",
        "org_id": fields.get("org_id") or "demo_org",
        "user_id": fields.get("user_id") or "demo_user",
    }
    return job


def run_push(args: argparse.Namespace, settings: Settings) -> int:
    from redswitch.store.connection import redis_from_settings

    job = sample_job(
        args.caller,
        args.callee,
        args.dial_id,
        call_provider=args.call_provider,
        caller_id_lega=args.caller_id_lega,
        caller_id_legb=args.caller_id_legb,
        org_id=args.org_id,
        user_id=args.user_id,
    )
    redis_from_settings(settings).rpush(settings.jobs_key, json.dumps(job))
    print(job["dial_id"])
    return 0


def add_watch(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("watch", help="print the events of a call as they come (or from its first)")
    parser.add_argument("dial_id")
    parser.add_argument("--until-hangup", action="store_true", help="exit after side 0 hangs up or a failure")
    parser.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (0: never)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-start", action="store_true", help="from the call's first event, then live")
    start.add_argument("--from", dest="after", default=None, metavar="ID", help="resume after this stream id")
    parser.add_argument("--ids", action="store_true", help="print each event's stream id before it")
    parser.set_defaults(handler=run_watch)


def run_watch(args: argparse.Namespace, settings: Settings) -> int:
    """Follow the call's event stream (gap-free: XREAD from the last id read); with the event log off, its
    channel."""
    from redswitch.messages import ID_PATTERN
    from redswitch.store.connection import redis_from_settings
    from redswitch.store.eventlog import LATEST, START, follow
    from redswitch.store.keys import Keys

    if not ID_PATTERN.fullmatch(args.dial_id):
        print("redswitch watch: a dial_id is 1 to 64 letters, digits, _ or -", file=sys.stderr)
        return 2
    if not _stream_id(args.after, "watch"):
        return 2
    client = redis_from_settings(settings)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    if not settings.event_streams:
        if args.from_start or args.after or args.ids:
            print("redswitch watch: --from-start, --from and --ids need EVENT_STREAMS on", file=sys.stderr)
            return 2
        return _watch_channel(client, args.dial_id, args.until_hangup, deadline)
    after = START if args.from_start else (args.after or LATEST)
    for logged in follow(client, Keys.events(args.dial_id), after, dial_id=args.dial_id, deadline=deadline):
        print(f"{logged.id} {logged.text}" if args.ids else logged.text, flush=True)
        if args.until_hangup and _ends_call(logged.text):
            return 0
    return 1


def _watch_channel(client: Any, dial_id: str, until_hangup: bool, deadline: float | None) -> int:
    """Live only, from the channel (pub/sub: what is published while nobody listens is not seen)."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(dial_id)
    while deadline is None or time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message is None:
            continue
        print(message["data"], flush=True)
        if until_hangup and _ends_call(str(message["data"])):
            return 0
    return 1


def add_events(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "events", help="follow every call's events (the firehose), alone or as a member of a consumer group"
    )
    parser.add_argument("--group", default=None, help="read as a member of this consumer group (at least once)")
    parser.add_argument("--consumer", default=None, help="this member's name in the group (default: host-pid)")
    parser.add_argument("--claim-idle", type=float, default=30.0, help="take over a member's events after this long")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-start", action="store_true", help="from the oldest event the firehose holds")
    start.add_argument("--from", dest="after", default=None, metavar="ID", help="from after this stream id")
    parser.add_argument("--timeout", type=float, default=0, help="stop after this many seconds (0: never)")
    parser.set_defaults(handler=run_events)


def run_events(args: argparse.Namespace, settings: Settings) -> int:
    """One line per event: ``<stream id> <dial_id> <event JSON>``. A group is created where ``--from-start`` or
    ``--from`` says (default: from now on) when it does not exist yet."""
    import os
    import socket

    from redswitch.store.connection import redis_from_settings
    from redswitch.store.eventlog import LATEST, START, GroupReader, follow
    from redswitch.store.keys import Keys

    if not settings.event_streams or not settings.firehose_maxlen:
        print("redswitch events: the firehose is off (EVENT_STREAMS, FIREHOSE_MAXLEN)", file=sys.stderr)
        return 2
    if not _stream_id(args.after, "events"):
        return 2
    client = redis_from_settings(settings)
    after = START if args.from_start else (args.after or LATEST)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    if args.group is None:
        events = follow(client, Keys.firehose(), after, deadline=deadline)
    else:
        consumer = args.consumer or f"{socket.gethostname()}-{os.getpid()}"
        reader = GroupReader(client, Keys.firehose(), args.group, consumer, create_at=after, claim_idle=args.claim_idle)
        events = reader.events(deadline)
    for logged in events:
        print(f"{logged.id} {logged.dial_id} {logged.text}", flush=True)
    return 0


def _stream_id(value: str | None, command: str) -> bool:
    """``--from``'s value is a stream id (``<ms>-<seq>``, or ``<ms>``); say so when it is not."""
    import re

    if value is None or re.fullmatch(r"[0-9]{1,20}(-[0-9]{1,20})?", value):
        return True
    print(f"redswitch {command}: --from takes a stream id such as 1795931653129-0: {value[:40]!r}", file=sys.stderr)
    return False


def _ends_call(data: str) -> bool:
    try:
        event = json.loads(data)
    except ValueError:
        return False
    return bool(event.get("type") == "failure" or (event.get("type") == "hangup-event" and event.get("side") == "0"))


def add_send(subparsers: Subparsers) -> None:
    from redswitch.messages import CONTROL_TYPES

    parser = subparsers.add_parser(
        "send", help="send a control message to a call, wait for its ack or error and print it (exit 0 on ack)"
    )
    parser.add_argument("dial_id")
    parser.add_argument("kind", choices=CONTROL_TYPES, metavar="{" + ",".join(CONTROL_TYPES) + "}")
    parser.add_argument(
        "--phone", default=None, help="barge: the number (or SIP address user@host) to dial; transfer: the number"
    )
    parser.add_argument(
        "--caller-id",
        default=None,
        help="barge: the caller id shown (default: --phone); transfer: (default: the side's own caller id)",
    )
    parser.add_argument(
        "--side", default=None, help="send-dtmf, hold, unhold, transfer: side 0 or 1; play, stop-play: or both"
    )
    parser.add_argument("--file", default=None, help="play: a file name in SOUNDS_DIR")
    parser.add_argument("--digits", default=None, help="send-dtmf: the DTMF digits (0-9 * # A-D)")
    parser.add_argument("--by", default=None, help="who sends it (logged by the worker)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the reply (default 10; transfer: 10 more than the new leg may ring)",
    )
    parser.set_defaults(handler=run_send)


def _send_message(args: argparse.Namespace) -> dict[str, Any] | None:
    """The message's numbers from ``--phone`` and ``--caller-id`` (barge, transfer); None (said why) when wrong."""
    message: dict[str, Any] = {"type": args.kind}
    if args.kind == "barge":
        if not args.phone:
            print("redswitch send: barge needs --phone", file=sys.stderr)
            return None
        message.update(phone_number=args.phone, caller_id=args.caller_id or args.phone)
    elif args.kind == "transfer":
        if not args.phone or not args.side:
            print("redswitch send: transfer needs --side and --phone", file=sys.stderr)
            return None
        message.update(phone_number=args.phone, **({"caller_id": args.caller_id} if args.caller_id else {}))
    elif args.phone or args.caller_id:
        print(f"redswitch send: --phone and --caller-id are for barge and transfer, not {args.kind}", file=sys.stderr)
        return None
    return message


def run_send(args: argparse.Namespace, settings: Settings) -> int:
    """Publish the message on the call's channel (subscribed first, so the reply cannot be missed), then print the
    first ``ack`` or ``error`` of that type. Exit 0 on ``ack``, 1 on ``error`` or no reply, 2 on bad arguments."""
    from redswitch import auth
    from redswitch.errors import PayloadError
    from redswitch.messages import TRANSFER_MAX_RING, check_dial_id
    from redswitch.store.connection import redis_from_settings

    message = _send_message(args)
    if message is None:
        return 2
    message.update({k: v for k in ("side", "digits", "file", "by") if (v := getattr(args, k)) is not None})
    try:
        check_dial_id(args.dial_id)
        payload = json.dumps(auth.outgoing(message, settings.control_secret))
    except PayloadError as exc:
        print(f"redswitch send: {exc.reason}", file=sys.stderr)
        return 2
    client = redis_from_settings(settings)
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(args.dial_id)
    pubsub.get_message(timeout=5)  # the subscription's confirmation: replies from here on reach us
    client.publish(args.dial_id, payload)
    timeout = args.timeout
    if timeout is None:  # a transfer is answered once the new leg answered or failed
        timeout = 10.0 + (min(settings.originate_timeout, TRANSFER_MAX_RING) if args.kind == "transfer" else 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pubsub.get_message(ignore_subscribe_messages=True, timeout=min(0.2, timeout))
        if got is None:
            continue
        try:
            reply = json.loads(got["data"])
        except ValueError:
            continue
        if isinstance(reply, dict) and reply.get("type") in ("ack", "error") and reply.get("event") == args.kind:
            print(json.dumps(reply), flush=True)
            return 0 if reply["type"] == "ack" else 1
    reason = f"no ack or error within {timeout:g}s (no active call {args.dial_id!r}, or no bridge running)"
    print(json.dumps({"type": "error", "event": args.kind, "reason": reason}), flush=True)
    return 1


def add_run(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run every process together (bridge, listener, worker, scheduler; and the simulator)"
    )
    parser.add_argument("--simulate", action="store_true", help="also start the simulator on ESL_URL:ESL_PORT")
    parser.set_defaults(handler=run_run)


def run_run(args: argparse.Namespace, settings: Settings) -> int:
    """Every process as a child, each output line prefixed with its name; Ctrl-C or SIGTERM stops them all (a
    second one kills them); a child that exits stops the others and the run (exit code 1)."""
    from redswitch.cli.launcher import Stack, run_foreground

    requests = [0]

    def request_stop(signum: int, frame: object) -> None:
        requests[0] += 1

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    stack = Stack(settings, simulate=args.simulate, scheduler=True, pipe_output=True)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return run_foreground(stack, lambda: requests[0])


def add_demo(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run a sample call through the whole pipeline and show its events")
    parser.set_defaults(handler=run_demo_command)


def run_demo_command(args: argparse.Namespace, settings: Settings) -> int:
    from redswitch.cli.launcher import run_demo

    return run_demo(settings)


def add_check(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("check", help="check Redis and FreeSWITCH; exit 0 when both answer")
    parser.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    from redswitch.cli.health import check, followers

    problems = check(settings)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print("ok: Redis and FreeSWITCH answer")
    for line in followers(settings):  # which listener follows each node: information, never a failure
        print(line)
    return 1 if problems else 0


def add_dashboard(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "dashboard", help="serve the live operations page (needs DASHBOARD_TOKEN, or --no-auth on loopback)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument(
        "--no-auth", action="store_true", help="serve without a token: only on a loopback address, for one person"
    )
    parser.set_defaults(handler=run_dashboard)


def run_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    """Refuse to serve the page to a network without a token; refuse without the optional web stack installed."""
    from redswitch.dashboard.security import may_serve

    refusal = may_serve(settings.dashboard_token, args.host, args.no_auth)
    if refusal:
        print(f"redswitch dashboard: {refusal}", file=sys.stderr)
        return 2
    if not settings.event_streams or not settings.firehose_maxlen:
        print(
            "redswitch dashboard: it follows the firehose: EVENT_STREAMS must be on, FIREHOSE_MAXLEN > 0",
            file=sys.stderr,
        )
        return 2
    try:
        from redswitch.dashboard.app import serve
    except ImportError as exc:
        print(f"redswitch dashboard: {exc}; install it with: pip install 'redswitch[dashboard]'", file=sys.stderr)
        return 2
    return serve(settings, args.host, args.port, args.no_auth)


REGISTRY: list[Callable[[Subparsers], None]] = [
    add_simulate,
    add_bridge,
    add_listen,
    add_schedule,
    add_run,
    add_demo,
    add_push,
    add_watch,
    add_events,
    add_send,
    add_check,
    add_dashboard,
]

"""Bare loops: the same Redis and ESL work as Redswitch, with no framework, for same-run baselines.

Run as a separate process (``python -m bench.bare MODE ...``) so it competes for the CPU as our processes do.
"""

from __future__ import annotations

import json
import socket
import sys
import time

import redis

from redswitch.protocol import Mode, Parser, encode_command


def events_to_redis(port: int, redis_url: str, expected: int) -> None:
    """Read events from the socket, publish each on its dial_id channel (one pipeline per read).

    It reads the same headers the listener reads, the same fast way, and keeps no state: the machine's ceiling
    for getting events from the socket onto Redis pub/sub.
    """
    from redswitch.protocol.pick import header_picker

    pick = header_picker(["Event-Name", "variable_redswitch_dial_id", "variable_redswitch_side", "Hangup-Cause"])
    client = redis.Redis.from_url(redis_url)
    sock = socket.create_connection(("127.0.0.1", port))
    parser = Parser(Mode.FRAMES)
    sock.recv(65536)  # greeting
    sock.sendall(encode_command("auth ClueCon"))
    sock.recv(65536)
    sock.sendall(encode_command("event plain ALL"))
    seen = 0
    replied = False
    while seen < expected:
        frames = parser.feed(sock.recv(262144))
        pipe = client.pipeline(transaction=False)
        for frame in frames:
            if frame.content_type != "text/event-plain":
                replied = True
                continue
            headers = pick(frame.raw_body)
            event = {"type": headers["Event-Name"], "side": headers["variable_redswitch_side"]}
            pipe.publish(headers["variable_redswitch_dial_id"], json.dumps(event))
            seen += 1
        pipe.execute()
    assert replied
    print(time.perf_counter(), flush=True)


def intake(port: int, redis_url: str, jobs_key: str, expected: int) -> None:
    """Pop jobs, parse and claim them, and send each originate with bgapi on one ESL connection."""
    from redswitch.config import Settings
    from redswitch.esl.client import EslClient
    from redswitch.messages import parse_job
    from redswitch.originate import click_to_call
    from redswitch.store import open_store

    settings = Settings(pubsub_redis_url=redis_url, esl_port=port)
    client = redis.Redis.from_url(redis_url)
    store = open_store(client, settings)
    esl = EslClient("127.0.0.1", port, "ClueCon")
    done = 0
    while done < expected:
        raw = client.blmove(jobs_key, jobs_key + ".bare", 1, "LEFT", "RIGHT")
        if raw is None:
            continue
        call = parse_job(raw)
        import uuid

        record = {
            "org_id": call.org_id,
            "user_id": call.user_id,
            "uuid0": str(uuid.uuid4()),
            "uuid1": str(uuid.uuid4()),
            "job_uuid": str(uuid.uuid4()),
            "state": "claimed",
        }
        store.claim(call.dial_id, call.org_id, call.user_id, record)
        esl.bgapi(click_to_call(settings, call, record["uuid0"], record["uuid1"]), record["job_uuid"])
        client.lrem(jobs_key + ".bare", 1, raw)
        done += 1


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "events":
        events_to_redis(int(args[0]), args[1], int(args[2]))
    elif mode == "intake":
        intake(int(args[0]), args[1], args[2], int(args[3]))

"""A minimal ESL server that feeds pre-encoded, FreeSWITCH-shaped channel events as fast as the socket takes.

It isolates what is measured: the cost of turning events into Redis state and pub/sub, not the cost of
producing them. The events have FreeSWITCH's header set and order (about 70 headers each, as a real
CHANNEL_ANSWER/CHANNEL_HANGUP from a sofia gateway leg) and are encoded with the project's codec.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid

from redswitch.protocol import Event, Mode, Parser, encode_event_plain, encode_reply

BASE = [
    ("Core-UUID", "2eb99d8b-748d-4cc9-9e4f-090e8ff8eaf3"),
    ("FreeSWITCH-Hostname", "vm"),
    ("FreeSWITCH-Switchname", "vm"),
    ("FreeSWITCH-IPv4", "192.0.2.2"),
    ("FreeSWITCH-IPv6", "fd00::2"),
    ("Event-Date-Local", "2026-11-27 04:47:02"),
    ("Event-Date-GMT", "Fri, 27 Nov 2026 04:47:02 GMT"),
    ("Event-Date-Timestamp", "1795754822836678"),
    ("Event-Calling-File", "switch_channel.c"),
    ("Event-Calling-Function", "switch_channel_perform_mark_answered"),
    ("Event-Calling-Line-Number", "3900"),
]
PROFILE = [
    "Direction",
    "Logical-Direction",
    "Caller-ID-Name",
    "Caller-ID-Number",
    "Orig-Caller-ID-Name",
    "Orig-Caller-ID-Number",
    "Callee-ID-Name",
    "Callee-ID-Number",
    "ANI",
    "Destination-Number",
    "Unique-ID",
    "Source",
    "Context",
    "Channel-Name",
    "Profile-Index",
    "Profile-Created-Time",
    "Channel-Created-Time",
    "Channel-Answered-Time",
    "Channel-Progress-Time",
    "Channel-Progress-Media-Time",
    "Channel-Hangup-Time",
    "Channel-Transfer-Time",
    "Channel-Resurrect-Time",
    "Channel-Bridged-Time",
    "Channel-Last-Hold",
    "Channel-Hold-Accum",
    "Screen-Bit",
    "Privacy-Hide-Name",
    "Privacy-Hide-Number",
]


def channel_event(name: str, seq: int, dial_id: str, side: str, cause: str = "") -> Event:
    leg = str(uuid.uuid4())
    headers = [
        ("Event-Name", name),
        *BASE,
        ("Event-Sequence", str(seq)),
        ("Channel-State", "CS_EXECUTE"),
        ("Channel-Call-State", "ACTIVE"),
        ("Channel-State-Number", "4"),
        ("Channel-Name", "sofia/internal/15105550100"),
        ("Unique-ID", leg),
        ("Call-Direction", "outbound"),
        ("Presence-Call-Direction", "outbound"),
        ("Channel-HIT-Dialplan", "false"),
        ("Channel-Call-UUID", leg),
        ("Answer-State", "hangup" if cause else "answered"),
    ]
    if cause:
        headers.append(("Hangup-Cause", cause))
    headers += [(f"Caller-{field}", "15105550100" if "Number" in field else "0") for field in PROFILE]
    headers += [
        ("variable_direction", "outbound"),
        ("variable_uuid", leg),
        ("variable_call_uuid", leg),
        ("variable_sip_gateway_name", "talk_call_provider"),
        ("variable_redswitch_dial_id", dial_id),
        ("variable_redswitch_org_id", "bench_org"),
        ("variable_redswitch_user_id", dial_id),
        ("variable_redswitch_side", side),
        ("variable_origination_caller_id_number", "15105625882"),
        ("variable_sip_h_X-Dial-Id", dial_id),
        ("variable_originate_timeout", "60"),
    ]
    return Event(tuple(headers))


def call_events(calls: int, prefix: str) -> tuple[bytes, int]:
    """Four events per call (answer 0, answer 1, hangup 1, hangup 0), encoded once; returns (bytes, count)."""
    frames = []
    seq = 0
    for n in range(calls):
        dial_id = f"{prefix}{n}"
        for name, side, cause in [
            ("CHANNEL_ANSWER", "0", ""),
            ("CHANNEL_ANSWER", "1", ""),
            ("CHANNEL_HANGUP", "1", "NORMAL_CLEARING"),
            ("CHANNEL_HANGUP", "0", "NORMAL_CLEARING"),
        ]:
            seq += 1
            frames.append(encode_event_plain(channel_event(name, seq, dial_id, side, cause)))
    return b"".join(frames), len(frames)


class Feeder:
    """Accepts ESL clients; after the client subscribes, streams ``payload`` once, then idles."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.started_at = 0.0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(ConnectionError):  # a client that leaves mid-stream resets the connection
            self._converse(conn)

    def _converse(self, conn: socket.socket) -> None:
        parser = Parser(Mode.COMMANDS)
        conn.sendall(b"Content-Type: auth/request\n\n")
        while data := conn.recv(65536):
            for frame in parser.feed(data):
                command = frame.command or ""
                if command.startswith("auth"):
                    conn.sendall(encode_reply("+OK accepted"))
                elif command.startswith("event"):
                    conn.sendall(encode_reply("+OK event listener enabled plain"))
                    self.started_at = time.perf_counter()
                    conn.sendall(self.payload)
                else:
                    conn.sendall(encode_reply("-ERR command not found"))

    def close(self) -> None:
        self.sock.close()

"""Exact bytes on the wire, checked against sessions recorded from a real FreeSWITCH."""

from __future__ import annotations

import re

import pytest

from redswitch.protocol import parse_event_json, parse_event_plain
from redswitch.simulator import Scenario, Simulator
from tests.esl_raw import RawClient, transcript_blocks, transcript_frames


@pytest.fixture
def vm_sim(simulator_factory) -> Simulator:
    """Hostname 'vm' like the recording switch, so global_getvar answers match byte for byte."""
    sim: Simulator = simulator_factory(Scenario.default().with_changes(hostname="vm"))
    return sim


def replay(sim: Simulator, name: str) -> None:
    """Send every recorded client block and expect exactly the recorded answer bytes (no events involved)."""
    client = RawClient(sim.port)
    try:
        for direction, data in transcript_blocks(name):
            if direction == ">>>":
                client.send(data)
            elif data:
                assert client.read_exact(len(data)) == data
            else:
                assert client.at_eof()
    finally:
        client.close()


@pytest.mark.parametrize(
    "name", ["01b_bad_password.txt", "01c_cmd_before_auth.txt", "13_linger_exit.txt", "13b_exit_plain.txt"]
)
def test_replay_exact(vm_sim: Simulator, name: str) -> None:
    replay(vm_sim, name)


def _shape(text: str) -> str:
    """Numbers and singular/plural units normalised: 'UP 0 years, 1 second' -> 'UP N year, N second'."""
    return re.sub(r"\d+", "N", re.sub(r"(\d+ [a-z]+?)s\b", r"\1", text))


def test_auth_status_session(vm_sim: Simulator) -> None:
    blocks = transcript_blocks("01_auth_status.txt")
    client = RawClient(vm_sim.port)
    for direction, data in blocks:
        if direction == ">>>":
            client.send(data)
            continue
        if not data:
            assert client.at_eof()
            continue
        got = client.read_exact(len(data)) if b"UP " not in data else None
        if got is None:  # status: same lines except the uptime and idle cpu numbers
            frame = client.frame()
            body = frame.body
            assert frame.headers == (("Content-Type", "api/response"), ("Content-Length", str(len(body.encode()))))
            want = data.decode().split("\n\n", 1)[1]
            assert _shape(body) == _shape(want)
        else:
            assert got == data


def test_myevents_replies(simulator: Simulator) -> None:
    client = RawClient(simulator.port)
    client.login()
    assert client.command("myevents 1b373041-8494-4cdd-aba5-f6ab3677083e").reply_text == "+OK Events Enabled"
    assert client.command("myevents plain 1b373041-8494-4cdd-aba5-f6ab3677083e").reply_text == "-ERR aready enabled."


def test_bgapi_job_uuid_header_and_background_job_layout(vm_sim: Simulator) -> None:
    recorded = [f for f in transcript_frames("06c_bgapi_job_uuid_header.txt") if "BACKGROUND_JOB" in f.body]
    want = parse_event_plain(recorded[0].raw_body)
    job = "77b9c502-c66e-4925-874f-138eb0f0f75c"
    arg = want.get("Job-Command-Arg")
    client = RawClient(vm_sim.port)
    client.login()
    assert client.command("event plain BACKGROUND_JOB").reply_text == "+OK event listener enabled plain"
    client.send(f"bgapi originate {arg}\nJob-UUID: {job}\n\n".encode())
    expected = f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n".encode()
    assert client.read_exact(len(expected)) == expected
    frame = client.frame()
    assert [k for k, _ in frame.headers] == ["Content-Length", "Content-Type"]
    assert frame.get("Content-Length") == str(len(frame.raw_body))
    got = parse_event_plain(frame.raw_body)
    assert [k for k, _ in got.headers] == [k for k, _ in want.headers]
    assert got.body == want.body
    mine, theirs = frame.raw_body, recorded[0].raw_body
    assert mine[mine.index(b"Job-UUID:") :] == theirs[theirs.index(b"Job-UUID:") :]


def test_sofia_channel_create_header_names_match_recording(simulator: Simulator) -> None:
    recorded = transcript_frames("carrier_01_answer_15105550100.txt")
    create = next(parse_event_plain(f.raw_body) for f in recorded if "sofia/internal/15105550100" in f.body)
    client = RawClient(simulator.port)
    client.login()
    client.command("event plain CHANNEL_CREATE")
    client.command(
        "bgapi originate {origination_uuid=3a21b146-a27d-460b-8b40-ecec21ed6bca,dial_id=d}"
        "sofia/gateway/gw/15105550100 &park()"
    )
    ev = client.events_until(lambda e: e.name == "CHANNEL_CREATE")[-1]
    assert [k for k, _ in ev.headers if not k.startswith("variable_")] == [
        k for k, _ in create.headers if not k.startswith("variable_")
    ]
    for key in ("Channel-State", "Channel-Name", "Unique-ID", "Call-Direction", "Answer-State", "Caller-Source"):
        assert ev.get(key) == create.get(key), key
    assert ev.get("variable_dial_id") == "d"


def test_json_event_framing_and_body(simulator: Simulator) -> None:
    client = RawClient(simulator.port)
    client.login()
    assert client.command("event json BACKGROUND_JOB").reply_text == "+OK event listener enabled json"
    client.command("bgapi status")
    frame = client.frame()
    assert frame.headers == (("Content-Length", str(len(frame.raw_body))), ("Content-Type", "text/event-json"))
    assert frame.raw_body.startswith(b'{"Event-Name":"BACKGROUND_JOB",')
    assert re.search(rb',"Content-Length":"\d+","_body":"UP ', frame.raw_body)
    assert parse_event_json(frame.raw_body).body.startswith("UP ")


def test_api_results(simulator: Simulator) -> None:
    client = RawClient(simulator.port)
    client.login()
    assert client.command("api show channels as json").body == '{"row_count": 0}\n'
    assert client.command("api show calls count").body == "\n0 total.\n"
    assert client.command("api uuid_kill nope").body == "-ERR No such channel!\n"
    assert client.command("api uuid_exists nope").body == "false"
    assert client.command("api originate onlyone").body.startswith("-USAGE: ")
    assert client.command("frobnicate").reply_text == "-ERR command not found"
    assert client.command("event plain NOTANEVENT").reply_text == "-ERR no keywords supplied"
    assert client.command("filter Unique-ID abc").reply_text == "+OK filter added. [Unique-ID]=[abc]"
    assert client.command("filter delete Unique-ID abc").reply_text == "+OK filter deleted. [Unique-ID][abc]"
    assert client.command("noevents").reply_text == "-ERR not listening for events"


def test_one_byte_at_a_time_commands(simulator: Simulator) -> None:
    client = RawClient(simulator.port)
    assert client.frame().content_type == "auth/request"
    for byte in b"auth ClueCon\r\n\r\napi version\n\n":
        client.send(bytes([byte]))
    assert client.frame().reply_text == "+OK accepted"
    assert client.frame().body == "FreeSWITCH Version 1.11.3-dev~64bit ( 64bit)\n"

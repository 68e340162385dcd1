"""greenswitch's InboundESL against the simulator behaves as against FreeSWITCH."""

from __future__ import annotations

from typing import Any

import gevent
import greenswitch
import pytest

from redswitch.simulator import Simulator

GW = "sofia/gateway/gw"


def connect(sim: Simulator, password: str = "ClueCon") -> greenswitch.InboundESL:
    client = greenswitch.InboundESL(host="127.0.0.1", port=sim.port, password=password)
    client.connect()
    return client


def collect(client: greenswitch.InboundESL, names: list[str]) -> list[Any]:
    seen: list[Any] = []
    for name in names:
        client.register_handle(name, seen.append)
    return seen


def wait_for(predicate, timeout: float = 5.0) -> None:
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.01)


def job_body(event) -> str:
    """greenswitch leaves the BACKGROUND_JOB body inside the inner Content-Length value."""
    return str(event.headers["Content-Length"]).split("\n\n", 1)[1]


def test_wrong_password_raises(simulator: Simulator) -> None:
    with pytest.raises(ValueError):
        connect(simulator, "nope")


def test_api_and_bgapi(simulator: Simulator) -> None:
    client = connect(simulator)
    try:
        assert client.send("api version").data == "FreeSWITCH Version 1.11.3-dev~64bit ( 64bit)\n"
        jobs = collect(client, ["BACKGROUND_JOB"])
        client.send("event plain BACKGROUND_JOB")
        reply = client.send(f"bgapi originate {{origination_uuid=g1}}{GW}/15105550100 &park()")
        assert reply.data.startswith("+OK Job-UUID: ")
        wait_for(lambda: jobs)
        assert jobs[0].headers["Job-UUID"] == reply.headers["Job-UUID"]
        assert job_body(jobs[0]).strip() == "+OK g1"  # greenswitch drops the trailing newline, as with FreeSWITCH
    finally:
        client.stop()


@pytest.mark.parametrize(
    ("number", "cause"),
    [
        ("14155550486", "USER_BUSY"),
        ("14155550404", "UNALLOCATED_NUMBER"),
        ("14155550503", "NORMAL_TEMPORARY_FAILURE"),
        ("14155550408", "NO_ANSWER"),
    ],
)
def test_failed_calls(simulator: Simulator, number: str, cause: str) -> None:
    client = connect(simulator)
    try:
        hangups = collect(client, ["CHANNEL_HANGUP_COMPLETE"])
        client.send("event plain CHANNEL_HANGUP_COMPLETE")
        body = client.send(f"api originate {{originate_timeout=1,origination_uuid=x{number}}}{GW}/{number} &park()")
        assert body.data == f"-ERR {cause}\n"
        wait_for(lambda: hangups)
        assert hangups[0].headers["Hangup-Cause"] == cause
        assert hangups[0].headers["Unique-ID"] == f"x{number}"
    finally:
        client.stop()


def test_click_to_call_bridge_and_eavesdrop(simulator: Simulator) -> None:
    client = connect(simulator)
    try:
        seen = collect(client, ["CHANNEL_BRIDGE", "CHANNEL_CREATE", "DTMF", "CHANNEL_HANGUP"])
        client.send("event plain CHANNEL_BRIDGE CHANNEL_CREATE DTMF CHANNEL_HANGUP")
        line = f"originate {{origination_uuid=A,dial_id=g}}{GW}/15105550122 &bridge({{call_side=1}}{GW}/14155550111)"
        assert client.send(f"api {line}").data == "+OK A\n"
        wait_for(lambda: any(e.headers["Event-Name"] == "CHANNEL_BRIDGE" for e in seen))
        bridge = next(e for e in seen if e.headers["Event-Name"] == "CHANNEL_BRIDGE")
        b_uuid = bridge.headers["Other-Leg-Unique-ID"]
        assert bridge.headers["variable_dial_id"] == "g"
        assert client.send(f"api uuid_getvar {b_uuid} call_side").data == "1"
        assert client.send(f"api originate {{origination_uuid=S}}{GW}/15105550177 &eavesdrop(A)").data == "+OK S\n"
        wait_for(lambda: simulator.channels().get("S") is not None and simulator.channels()["S"].eavesdrop_target)
        client.send("api uuid_recv_dtmf S 2")
        wait_for(lambda: any(e.headers["Event-Name"] == "DTMF" for e in seen))
        assert client.send("api sim_eavesdrop_mode S").data == "talk_target"
        client.send("api uuid_kill A")
        wait_for(lambda: sum(e.headers["Event-Name"] == "CHANNEL_HANGUP" for e in seen) == 3)
    finally:
        client.stop()

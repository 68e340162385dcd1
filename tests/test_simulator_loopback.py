"""``loopback/`` endpoints as mod_loopback makes them: an ``-a``/``-b`` pair of channels that live and die together."""

from __future__ import annotations

import json

from redswitch.protocol import Event
from redswitch.simulator import Simulator
from tests.esl_raw import RawClient


def client_for(sim: Simulator) -> RawClient:
    client = RawClient(sim.port)
    client.login()
    client.command("event plain ALL")
    return client


def originate(client: RawClient, target: str, uid: str) -> tuple[str, list[Event]]:
    client.command(f"bgapi originate {{origination_uuid={uid},dial_id=lb}}{target} &park()")
    events = client.events_until(lambda e: e.name == "BACKGROUND_JOB")
    return events[-1].body, events


def b_uuid(events: list[Event], a: str) -> str:
    create = next(e for e in events if e.name == "CHANNEL_CREATE" and e.unique_id != a)
    return create.unique_id or ""


def test_loopback_originate_makes_the_a_and_b_pair(simulator: Simulator) -> None:
    client = client_for(simulator)
    # When a loopback endpoint is dialled with a context
    body, events = originate(client, "loopback/1000/sales", "lb-a")
    # Then originate returns the -a half, and a -b half exists beside it
    assert body == "+OK lb-a\n"
    b = b_uuid(events, "lb-a")
    names = [(e.name, e.get("Channel-Name")) for e in events if (e.name or "").startswith("CHANNEL_")]
    assert names[:4] == [
        ("CHANNEL_OUTGOING", "loopback/1000-a"),
        ("CHANNEL_CREATE", "loopback/1000-a"),
        ("CHANNEL_ORIGINATE", "loopback/1000-a"),
        ("CHANNEL_CREATE", "loopback/1000-b"),
    ]
    b_events = [e.name for e in events if e.unique_id == b]
    assert b_events == ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_EXECUTE", "CHANNEL_PARK"]
    # And the -b half is inbound, runs in the dialled context, carries the originate's variables
    b_create = next(e for e in events if e.name == "CHANNEL_CREATE" and e.unique_id == b)
    assert b_create.get("Call-Direction") == "inbound" and b_create.get("Caller-Context") == "sales"
    assert b_create.get("Caller-Source") == "mod_loopback" and b_create.get("Caller-Dialplan") == "xml"
    assert b_create.get("variable_dial_id") == "lb"
    assert b_create.get("variable_other_loopback_leg_uuid") == "lb-a"
    assert b_create.get("variable_loopback_leg") == "B"
    assert client.command("api uuid_getvar lb-a other_loopback_leg_uuid").body == b
    assert client.command("api uuid_getvar lb-a loopback_leg").body == "A"


def test_show_channels_lists_both_halves(simulator: Simulator) -> None:
    client = client_for(simulator)
    originate(client, "loopback/1000", "lb-s")
    rows = json.loads(client.command("api show channels as json").body)["rows"]
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"loopback/1000-a", "loopback/1000-b"}
    assert by_name["loopback/1000-a"]["direction"] == "outbound"
    assert by_name["loopback/1000-b"]["direction"] == "inbound"
    assert by_name["loopback/1000-b"]["dialplan"] == "xml" and by_name["loopback/1000-b"]["context"] == "default"
    assert client.command("api show channels count").body == "\n2 total.\n"


def hangups(client: RawClient, count: int) -> dict[str, str]:
    events = client.events_until(lambda e: e.name == "CHANNEL_DESTROY")
    while sum(e.name == "CHANNEL_DESTROY" for e in events) < count:
        events += client.events_until(lambda e: e.name == "CHANNEL_DESTROY")
    return {e.unique_id or "": e.get("Hangup-Cause") or "" for e in events if e.name == "CHANNEL_HANGUP"}


def test_killing_the_a_half_ends_the_b_half(simulator: Simulator) -> None:
    client = client_for(simulator)
    _, events = originate(client, "loopback/1000", "lb-k")
    b = b_uuid(events, "lb-k")
    assert client.command("api uuid_kill lb-k").body == "+OK\n"
    assert hangups(client, 2) == {"lb-k": "NORMAL_CLEARING", b: "NORMAL_CLEARING"}
    assert client.command(f"api uuid_exists {b}").body == "false"
    assert simulator.channels() == {}


def test_killing_the_b_half_ends_the_a_half_with_its_cause(simulator: Simulator) -> None:
    client = client_for(simulator)
    _, events = originate(client, "loopback/1000", "lb-r")
    b = b_uuid(events, "lb-r")
    assert client.command(f"api uuid_kill {b} CALL_REJECTED").body == "+OK\n"
    assert hangups(client, 2) == {b: "CALL_REJECTED", "lb-r": "CALL_REJECTED"}
    assert client.command("api uuid_exists lb-r").body == "false"


def test_a_refused_loopback_call_ends_both_halves(simulator: Simulator) -> None:
    client = client_for(simulator)
    body, events = originate(client, "loopback/14155550486", "lb-busy")
    assert body == "-ERR USER_BUSY\n"
    b = b_uuid(events, "lb-busy")
    ended = {e.unique_id: e.get("Hangup-Cause") for e in events if e.name == "CHANNEL_HANGUP"}
    assert ended == {"lb-busy": "USER_BUSY", b: "USER_BUSY"}
    assert simulator.channels() == {}


def test_the_b_half_ending_reaches_the_call_bridged_to_the_a_half(simulator: Simulator) -> None:
    # Given a click-to-call whose second side is a loopback pair
    client = client_for(simulator)
    line = "originate {origination_uuid=cc-A}sofia/gateway/gw/15105550100 &bridge(loopback/2000)"
    client.command(f"bgapi {line}")
    events = client.events_until(lambda e: e.name == "CHANNEL_BRIDGE")
    b_half = next(e for e in events if e.get("Channel-Name") == "loopback/2000-b").unique_id
    # When the -b half hangs up
    assert client.command(f"api uuid_kill {b_half}").body == "+OK\n"
    # Then the -a half goes with it, and so does the side bridged to it (its bridge returned, nothing follows)
    ended = hangups(client, 3)
    assert ended[b_half or ""] == "NORMAL_CLEARING" and ended["cc-A"] == "NORMAL_CLEARING"
    assert len(ended) == 3
    assert simulator.channels() == {}

"""``uuid_bridge`` as FreeSWITCH runs it (mod_commands.c uuid_bridge_function, switch_ivr_bridge.c
switch_ivr_uuid_bridge), over ESL: what a transfer's bridge does to the leg it takes a channel away from."""

from __future__ import annotations

from redswitch.simulator import Simulator
from tests.esl_raw import RawClient
from tests.test_simulator_calls import GW, _bridged_pair, client_for, job_result


def _parked(client: RawClient, uuid: str, number: str = "15105550133") -> None:
    assert job_result(client, f"originate {{origination_uuid={uuid}}}{GW}/{number} &park()")[0] == f"+OK {uuid}\n"


def test_uuid_bridge_of_the_originator_to_a_parked_leg_ends_its_old_partner_normal_clearing(
    simulator: Simulator,
) -> None:
    # Given A (running bridge) bridged to B, and C answered and parked
    client = client_for(simulator)
    _bridged_pair(client, "TA1", "TB1")
    _parked(client, "TC1")
    # When A is bridged to C (a transfer of side 1: uuid_bridge <side 0> <new leg>)
    assert client.command("api uuid_bridge TA1 TC1").body == "+OK TC1\n"
    events = client.events_until(lambda e: e.name == "CHANNEL_DESTROY" and e.unique_id == "TB1")
    # Then A's old bridge ends (UNBRIDGE from A, its originator), C leaves its park, A bridges to C, and B, left
    # alone in audio_bridge_on_exchange_media, hangs up NORMAL_CLEARING
    order = [(e.name, e.unique_id) for e in events if e.name not in ("CHANNEL_EXECUTE", "CHANNEL_DESTROY")]
    assert order[:4] == [
        ("CHANNEL_UNBRIDGE", "TA1"),
        ("CHANNEL_UNPARK", "TC1"),
        ("CHANNEL_BRIDGE", "TA1"),
        ("CHANNEL_HANGUP", "TB1"),
    ]
    bridge = next(e for e in events if e.name == "CHANNEL_BRIDGE")
    assert (bridge.get("Bridge-A-Unique-ID"), bridge.get("Bridge-B-Unique-ID")) == ("TA1", "TC1")
    hangup = next(e for e in events if e.name == "CHANNEL_HANGUP")
    assert hangup.get("Hangup-Cause") == "NORMAL_CLEARING"
    executes = [(e.unique_id, e.get("Application-Data")) for e in events if e.get("Application") == "uuid_bridge"]
    assert executes == [("TA1", "TC1"), ("TC1", "TA1")]
    channels = simulator.channels()
    assert "TB1" not in channels and channels["TA1"].other_uuid == "TC1" and channels["TC1"].other_uuid == "TA1"
    # and the new pair behaves as a bridge: C's hangup ends A (nothing left to run: NORMAL_CLEARING)
    assert client.command("api uuid_kill TC1 USER_BUSY").body == "+OK\n"
    events = client.events_until(lambda e: e.name == "CHANNEL_HANGUP" and e.unique_id == "TA1")
    assert events[-1].get("Hangup-Cause") == "NORMAL_CLEARING"


def test_uuid_bridge_of_the_b_leg_ends_the_originator_whose_bridge_app_returns(simulator: Simulator) -> None:
    # A transfer of side 0: uuid_bridge <side 1> <new leg>; A's bridge returns with nothing after it
    client = client_for(simulator)
    _bridged_pair(client, "TA2", "TB2")
    _parked(client, "TC2")
    assert client.command("api uuid_bridge TB2 TC2").body == "+OK TC2\n"
    events = client.events_until(lambda e: e.name == "CHANNEL_DESTROY" and e.unique_id == "TA2")
    assert [e.get("Hangup-Cause") for e in events if e.name == "CHANNEL_HANGUP"] == ["NORMAL_CLEARING"]
    assert next(e for e in events if e.name == "CHANNEL_UNBRIDGE").unique_id == "TA2"
    channels = simulator.channels()
    assert "TA2" not in channels and channels["TB2"].other_uuid == "TC2"


def test_uuid_bridge_parks_an_old_partner_with_park_after_bridge_and_refuses_bad_pairs(simulator: Simulator) -> None:
    client = client_for(simulator)
    _bridged_pair(client, "TA3", "TB3", ",park_after_bridge=true")
    _parked(client, "TC3")
    assert client.command("api uuid_bridge TB3 TC3").body == "+OK TC3\n"
    events = client.events_until(lambda e: e.name == "CHANNEL_PARK" and e.unique_id == "TA3")
    assert not [e for e in events if e.name == "CHANNEL_HANGUP"]
    assert client.command("api uuid_exists TA3").body == "true"
    # no such channel, the same channel twice, too few arguments
    assert client.command("api uuid_bridge TA3 nosuch").body == "-ERR Invalid uuid\n"
    assert client.command("api uuid_bridge TA3 TA3").body == "-ERR Invalid uuid\n"
    assert client.command("api uuid_bridge TA3").body.startswith("-USAGE:")

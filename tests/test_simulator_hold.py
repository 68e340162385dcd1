"""uuid_hold and uuid_send_dtmf as FreeSWITCH's mod_commands.c and switch_ivr.c answer them, over a raw ESL socket."""

from __future__ import annotations

from redswitch.simulator import Simulator
from tests.test_simulator_calls import GW, client_for, job_result


def test_uuid_hold_fires_hold_events_and_refuses_a_second_hold_or_an_unhold_not_on_hold(simulator: Simulator) -> None:
    client = client_for(simulator)
    job_result(client, f"originate {{origination_uuid=H1}}{GW}/1 &park()")
    assert client.command("api uuid_hold off H1").body == "-ERR Operation failed\n"  # not on hold
    assert client.command("api uuid_hold H1").body == "+OK Success\n"
    hold = client.events_until(lambda e: e.name == "CHANNEL_HOLD")[-1]
    assert hold.unique_id == "H1" and simulator.channels()["H1"].held
    assert client.command("api uuid_hold H1").body == "-ERR Operation failed\n"  # "already on hold"
    assert client.command("api uuid_hold off H1").body == "+OK Success\n"
    unhold = client.events_until(lambda e: e.name == "CHANNEL_UNHOLD")[-1]
    assert unhold.unique_id == "H1" and not simulator.channels()["H1"].held
    assert client.command("api uuid_hold toggle H1").body == "+OK Success\n"
    assert simulator.channels()["H1"].held
    # switch_ivr_hold_uuid starts from success: a uuid that does not exist is +OK; no arguments is the usage
    assert client.command("api uuid_hold 00000000-0000-0000-0000-000000000000").body == "+OK Success\n"
    assert client.command("api uuid_hold").body.startswith("-USAGE:")


def test_uuid_send_dtmf_goes_to_the_endpoint_without_an_event(simulator: Simulator) -> None:
    client = client_for(simulator)
    job_result(client, f"originate {{origination_uuid=D1}}{GW}/1 &park()")
    assert client.command("api uuid_send_dtmf D1 12#").body == "+OK D1 sent DTMF 12#.\n"
    assert client.command("api uuid_send_dtmf D1 4").body == "+OK D1 sent DTMF 4.\n"
    assert simulator.channels()["D1"].dtmf_sent == "12#4"
    assert client.command("api uuid_send_dtmf nosuch 1").body == "-ERR Cannot locate session!\n"
    client.command("api uuid_kill D1")
    events = client.events_until(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE")
    assert not [e for e in events if e.name == "DTMF"]

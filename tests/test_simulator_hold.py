"""uuid_hold, uuid_send_dtmf and uuid_record as FreeSWITCH answers them (mod_commands.c, switch_ivr*.c), over ESL."""

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


def test_uuid_record_starts_and_stops_with_record_events_and_a_hangup_closes_it(simulator: Simulator) -> None:
    client = client_for(simulator)
    job_result(client, f"originate {{origination_uuid=R1}}{GW}/1 &park()")
    path = "/var/lib/freeswitch/recordings/r1.wav"
    assert client.command(f"api uuid_record R1 stop {path}").body == "-ERR Cannot stop record session!\n"
    assert client.command(f"api uuid_record R1 start {path}").body == "+OK Success\n"
    start = client.events_until(lambda e: e.name == "RECORD_START")[-1]
    assert (start.unique_id, start.get("Record-File-Path")) == ("R1", path)
    assert client.command(f"api uuid_record R1 start {path}").body == "+OK Success\n"  # "Already recording"
    assert simulator.channels()["R1"].recordings == (path,)
    assert client.command(f"api uuid_record R1 stop {path}").body == "+OK Success\n"
    stop = client.events_until(lambda e: e.name == "RECORD_STOP")[-1]
    assert stop.get("Record-File-Path") == path and simulator.channels()["R1"].recordings == ()
    assert client.command("api uuid_record nosuch start /x/y.wav").body == "-ERR Cannot locate session!\n"
    assert client.command("api uuid_record R1 start").body.startswith("-USAGE:")
    # a hangup removes the media bug: RECORD_STOP after CHANNEL_HANGUP, before CHANNEL_HANGUP_COMPLETE
    client.command(f"api uuid_record R1 start {path}")
    client.events_until(lambda e: e.name == "RECORD_START")
    client.command("api uuid_kill R1")
    names = [e.name for e in client.events_until(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE")]
    assert names.index("CHANNEL_HANGUP") < names.index("RECORD_STOP") < names.index("CHANNEL_HANGUP_COMPLETE")


def test_uuid_record_needs_media(simulator: Simulator) -> None:
    client = client_for(simulator)
    client.command(f"bgapi originate {{origination_uuid=R2,originate_timeout=2}}{GW}/14155550408 &park()")
    client.events_until(lambda e: e.name == "CHANNEL_CREATE")
    assert client.command("api uuid_record R2 start /x/r2.wav").body == "-ERR Cannot record session!\n"


def test_uuid_broadcast_plays_to_the_legs_asked_for_and_uuid_break_stops_it(simulator: Simulator) -> None:
    client = client_for(simulator)
    job_result(client, f"originate {{origination_uuid=PA}}{GW}/1 &bridge({{origination_uuid=PB}}{GW}/2)")
    client.events_until(lambda e: e.name == "CHANNEL_BRIDGE")
    path = "/usr/share/freeswitch/sounds/hello.wav"
    assert client.command(f"api uuid_broadcast PA {path} aleg").body == "+OK Message sent\n"
    events = client.events_until(lambda e: e.name == "PLAYBACK_START")
    execute = next(e for e in events if e.name == "CHANNEL_EXECUTE" and e.get("Application") == "playback")
    assert (execute.unique_id, execute.get("Application-Data")) == ("PA", path)
    assert (events[-1].unique_id, events[-1].get("Playback-File-Path")) == ("PA", path)
    channels = simulator.channels()
    assert (channels["PA"].playing, channels["PB"].playing) == (path, None)
    assert client.command("api uuid_break PA").body == "+OK\n"
    events = client.events_until(lambda e: e.name == "CHANNEL_EXECUTE_COMPLETE")
    stop = next(e for e in events if e.name == "PLAYBACK_STOP")
    assert (stop.unique_id, stop.get("Playback-Status")) == ("PA", "break")
    assert simulator.channels()["PA"].playing is None
    assert client.command("api uuid_break PA").body == "+OK\n"  # nothing plays: still +OK
    assert client.command(f"api uuid_broadcast PA {path} both").body == "+OK Message sent\n"
    assert {simulator.channels()[u].playing for u in ("PA", "PB")} == {path}
    assert client.command("api uuid_break PA both").body == "+OK\n"
    assert {simulator.channels()[u].playing for u in ("PA", "PB")} == {None}
    assert client.command(f"api uuid_broadcast nosuch {path}").body == "-ERR invalid uuid\n"
    assert client.command("api uuid_break nosuch").body == "-ERR No such channel!\n"
    assert client.command("api uuid_broadcast PA").body.startswith("-USAGE:")

"""SIMULATOR-ONLY ``api sim_flood`` / ``Simulator.flood``: synthetic channel events the listener can map."""

from __future__ import annotations

import json

from redswitch.protocol import parse_event_json, parse_event_plain
from redswitch.simulator import Simulator
from tests.esl_raw import RawClient


def subscriber(sim: Simulator, line: str = "event plain CHANNEL_ANSWER CHANNEL_HANGUP") -> RawClient:
    client = RawClient(sim.port)
    client.login()
    assert client.command(line).reply_text is not None
    return client


def test_sim_flood_emits_answer_then_hangup_per_channel_with_listener_variables(simulator: Simulator) -> None:
    # Given a subscriber to the events the listener maps
    sub = subscriber(simulator)
    # When 6 events are flooded from another connection
    ctl = subscriber(simulator, "noevents")
    assert ctl.command("api sim_flood 6").body == "+OK 6\n"
    events = [parse_event_plain(sub.frame().raw_body) for _ in range(6)]
    # Then each synthetic channel answers then hangs up, with its own uuid and dial id
    assert [e.name for e in events] == ["CHANNEL_ANSWER", "CHANNEL_HANGUP"] * 3
    uuids = [e.unique_id for e in events]
    assert uuids[0] == uuids[1] != uuids[2] == uuids[3]
    assert [e.get("variable_redswitch_dial_id") for e in events[::2]] == ["flood-0", "flood-1", "flood-2"]
    hangup = events[1]
    assert hangup.get("Hangup-Cause") == "NORMAL_CLEARING" and hangup.get("Answer-State") == "hangup"
    assert hangup.get("variable_redswitch_org_id") == "flood-org"
    assert hangup.get("variable_redswitch_user_id") == "flood-user"
    assert hangup.get("variable_redswitch_side") == "0"
    assert hangup.get("Caller-Unique-ID") == hangup.unique_id == hangup.get("variable_uuid")
    # And the sequence numbers keep rising across the flood, as for any event
    seqs = [int(e.get("Event-Sequence") or 0) for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6


def test_sim_flood_with_dial_id_honours_filters_and_formats(simulator: Simulator) -> None:
    # Given a json subscriber filtering on the hangups only
    sub = subscriber(simulator, "event json CHANNEL_ANSWER CHANNEL_HANGUP")
    assert (
        sub.command("filter Event-Name CHANNEL_HANGUP").reply_text == "+OK filter added. [Event-Name]=[CHANNEL_HANGUP]"
    )
    # When 4 events are flooded for one dial id
    assert simulator.flood(4, "d-42", org_id="o1", user_id="u1", side="1") == 4
    frames = [sub.frame() for _ in range(2)]
    # Then only the 2 hangups arrive, as JSON, carrying the given ids
    events = [parse_event_json(f.raw_body) for f in frames]
    assert [e.name for e in events] == ["CHANNEL_HANGUP", "CHANNEL_HANGUP"]
    assert {e.get("variable_redswitch_dial_id") for e in events} == {"d-42"}
    assert (events[0].get("variable_redswitch_org_id"), events[0].get("variable_redswitch_side")) == ("o1", "1")
    assert json.loads(frames[0].raw_body)["Unique-ID"] == events[0].unique_id
    # And nothing else is waiting (the answers were filtered out)
    assert sub.command("api sim_flood 0").body == "+OK 0\n"


def test_sim_flood_large_count_arrives_complete_and_leaves_no_channel(simulator: Simulator) -> None:
    # Given a plain subscriber
    sub = subscriber(simulator)
    # When 5000 events are flooded with bgapi (the api connection stays free)
    ctl = subscriber(simulator, "event plain BACKGROUND_JOB")
    ctl.command("bgapi sim_flood 5000")
    # Then all 5000 arrive, in answer/hangup pairs, and the job reports the count
    names = [parse_event_plain(sub.frame().raw_body).name for _ in range(5000)]
    assert names.count("CHANNEL_ANSWER") == names.count("CHANNEL_HANGUP") == 2500
    job = ctl.events_until(lambda e: e.name == "BACKGROUND_JOB")[-1]
    assert job.body == "+OK 5000\n"
    assert simulator.channels() == {}


def test_sim_flood_usage(simulator: Simulator) -> None:
    client = subscriber(simulator, "noevents")
    assert client.command("api sim_flood").body == "-USAGE: sim_flood <count> [<dial_id>]\n"
    assert client.command("api sim_flood many").body == "-USAGE: sim_flood <count> [<dial_id>]\n"

"""Call outcomes, click-to-call, hangup cascades and eavesdrop, observed over a raw ESL socket."""

from __future__ import annotations

import time
from typing import Any

from redswitch.simulator import Scenario, Simulator
from tests.esl_raw import RawClient

GW = "sofia/gateway/gw"


def client_for(sim: Simulator) -> RawClient:
    client = RawClient(sim.port)
    client.login()
    client.command("event plain ALL")
    return client


def job_result(client: RawClient, line: str) -> tuple[str, list[Any]]:
    client.command(f"bgapi {line}")
    events = client.events_until(lambda e: e.name == "BACKGROUND_JOB", timeout=5)
    return events[-1].body, events


def test_answered_call_events_and_variables(simulator: Simulator) -> None:
    client = client_for(simulator)
    body, events = job_result(client, f"originate {{origination_uuid=u-a,dial_id=d1}}{GW}/15105550100 &park()")
    assert body == "+OK u-a\n"
    names = [e.name for e in events if e.unique_id == "u-a"]
    assert names == ["CHANNEL_OUTGOING", "CHANNEL_CREATE", "CHANNEL_ORIGINATE", "CHANNEL_PROGRESS", "CHANNEL_ANSWER"]
    assert events[1].get("variable_dial_id") == "d1"
    # CHANNEL_PROGRESS is fired before the call state becomes RINGING (switch_channel.c): it shows the one before
    states = {e.name: e.get("Channel-Call-State") for e in events if e.unique_id == "u-a"}
    assert (states["CHANNEL_PROGRESS"], states["CHANNEL_ANSWER"]) == ("DOWN", "RINGING")
    assert client.command("api uuid_getvar u-a dial_id").body == "d1"
    assert simulator.channels()["u-a"].answered
    assert client.command("api uuid_kill u-a").body == "+OK\n"
    done = client.events_until(lambda e: e.name == "CHANNEL_DESTROY")
    hc = next(e for e in done if e.name == "CHANNEL_HANGUP_COMPLETE")
    assert hc.get_all("Hangup-Cause") == ["NORMAL_CLEARING", "NORMAL_CLEARING"]
    assert hc.get("variable_hangup_cause_q850") == "16"
    assert client.command("api uuid_exists u-a").body == "false"


def test_failures_by_magic_number(simulator: Simulator) -> None:
    client = client_for(simulator)
    for number, cause in (("14155550486", "USER_BUSY"), ("14155550404", "UNALLOCATED_NUMBER"), ("1503", "X")):
        if cause == "X":
            number, cause = "14155550503", "NORMAL_TEMPORARY_FAILURE"
        body, events = job_result(client, f"originate {{origination_uuid=f-{number}}}{GW}/{number} &park()")
        assert body == f"-ERR {cause}\n"
        hangup = next(e for e in events if e.name == "CHANNEL_HANGUP" and e.unique_id == f"f-{number}")
        assert hangup.get("Hangup-Cause") == cause
        assert not any(e.name == "CHANNEL_ANSWER" for e in events)


def test_no_answer_after_originate_timeout(simulator: Simulator) -> None:
    client = client_for(simulator)
    start = time.monotonic()
    body, _ = job_result(client, f"originate {{originate_timeout=1}}{GW}/14155550408 &park()")
    assert body == "-ERR NO_ANSWER\n"
    assert 0.9 < time.monotonic() - start < 3


def test_blocking_api_originate_holds_the_connection(simulator: Simulator) -> None:
    client = client_for(simulator)
    client.send(f"api originate {{origination_uuid=blk}}{GW}/15105550100 &park()\n\n".encode())
    first = client.frame()
    assert first.content_type == "api/response" and first.body == "+OK blk\n"


def test_click_to_call_bridge_and_kill_cascade(simulator: Simulator) -> None:
    client = client_for(simulator)
    line = (
        f"originate {{origination_uuid=A1,dial_id=c1,call_side=0}}{GW}/15105550122 "
        f"&bridge({{call_side=1,origination_caller_id_number=14157697098}}{GW}/14155550111)"
    )
    body, _ = job_result(client, line)
    assert body == "+OK A1\n"
    events = client.events_until(lambda e: e.name == "CHANNEL_BRIDGE")
    b_create = next(e for e in events if e.name == "CHANNEL_CREATE")
    b_uuid = b_create.unique_id
    assert b_uuid != "A1" and b_create.get("Other-Leg-Unique-ID") == "A1"
    assert b_create.get("variable_call_side") == "1" and b_create.get("variable_dial_id") is None
    bridge = events[-1]
    assert bridge.unique_id == "A1" and bridge.get("Bridge-B-Unique-ID") == b_uuid
    spy_body, _ = job_result(client, f"originate {{origination_uuid=S1}}{GW}/15105550177 &eavesdrop(A1)")
    assert spy_body == "+OK S1\n"
    client.command("api uuid_kill A1")
    ended = client.events_until(lambda e: e.name == "CHANNEL_HANGUP" and e.unique_id == "S1")
    causes = {e.unique_id: e.get("Hangup-Cause") for e in ended if e.name == "CHANNEL_HANGUP"}
    assert causes == {"A1": "NORMAL_CLEARING", b_uuid: "NORMAL_CLEARING", "S1": "NORMAL_CLEARING"}
    assert [e.name for e in ended].count("CHANNEL_BRIDGE") == 0


def test_click_to_call_busy_b(simulator: Simulator) -> None:
    client = client_for(simulator)
    line = f"originate {{origination_uuid=A2}}{GW}/15105550122 &bridge({{call_side=1}}{GW}/14155550486)"
    body, _ = job_result(client, line)
    assert body == "+OK A2\n"
    events = client.events_until(lambda e: e.name == "CHANNEL_HANGUP" and e.unique_id == "A2")
    hangups = [(e.unique_id == "A2", e.get("Hangup-Cause")) for e in events if e.name == "CHANNEL_HANGUP"]
    assert hangups == [(False, "USER_BUSY"), (True, "USER_BUSY")]


def test_far_end_hangup_of_b_ends_a(simulator: Simulator) -> None:
    client = client_for(simulator)
    job_result(client, f"originate {{origination_uuid=A3}}{GW}/1 &bridge({{origination_uuid=B3}}{GW}/2)")
    client.events_until(lambda e: e.name == "CHANNEL_BRIDGE")
    assert simulator.hangup("B3", "NORMAL_CLEARING")
    client.events_until(lambda e: e.name == "CHANNEL_HANGUP" and e.unique_id == "A3")
    assert simulator.channels() == {}


def test_eavesdrop_dtmf_modes(simulator: Simulator) -> None:
    client = client_for(simulator)
    job_result(client, f"originate {{origination_uuid=T1}}{GW}/1 &park()")
    job_result(client, f"originate {{origination_uuid=S2}}{GW}/2 &eavesdrop(T1)")
    client.events_until(lambda e: e.name == "CHANNEL_EXECUTE" and e.unique_id == "S2")
    assert simulator.eavesdrop_mode("S2") == "listen"
    for digit, mode in (("2", "talk_target"), ("1", "talk_other"), ("3", "threeway"), ("0", "listen")):
        assert client.command(f"api uuid_recv_dtmf S2 {digit}").body == f"+OK S2 received DTMF {digit}.\n"
        dtmf = client.events_until(lambda e: e.name == "DTMF")[-1]
        assert (dtmf.get("DTMF-Digit"), dtmf.get("DTMF-Source")) == (digit, "APP")
        assert simulator.eavesdrop_mode("S2") == mode
        assert client.command("api sim_eavesdrop_mode S2").body == mode
    client.command("api uuid_send_dtmf S2 2")
    assert simulator.eavesdrop_mode("S2") == "listen"
    client.command("api uuid_kill T1")
    client.events_until(lambda e: e.name == "CHANNEL_HANGUP" and e.unique_id == "S2")


def test_eavesdrop_presets_and_disabled_dtmf(simulator: Simulator) -> None:
    client = client_for(simulator)
    job_result(client, f"originate {{origination_uuid=T2}}{GW}/1 &park()")
    spy_vars = "origination_uuid=S3,eavesdrop_whisper_aleg=true,eavesdrop_enable_dtmf=false"
    line = f"originate {{{spy_vars}}}{GW}/2 &eavesdrop(T2)"
    job_result(client, line)
    client.events_until(lambda e: e.name == "CHANNEL_EXECUTE" and e.unique_id == "S3")
    assert simulator.eavesdrop_mode("S3") == "talk_other"
    client.command("api uuid_recv_dtmf S3 3")
    assert simulator.eavesdrop_mode("S3") == "talk_other"


def test_throttle_and_gateways(simulator_factory) -> None:
    sim = simulator_factory(Scenario.default().with_changes(sessions_per_second=2, gateways=("gw",)))
    client = client_for(sim)
    results = [job_result(client, f"originate {GW}/1{i} &park()")[0] for i in range(3)]
    assert results[2] == "-ERR DESTINATION_OUT_OF_ORDER\n"
    assert job_result(client, "originate sofia/gateway/nope/1 &park()")[0] == "-ERR INVALID_GATEWAY\n"
    assert sum(1 for c in sim.commands() if c.startswith("bgapi originate")) == 4
    assert sim.originates()[0].endpoint == f"{GW}/10"


def test_faults_drop_and_refuse(simulator: Simulator) -> None:
    client = client_for(simulator)
    simulator.drop_all_connections()
    assert client.at_eof()
    simulator.refuse_connections(True)
    try:
        RawClient(simulator.port)
        raise AssertionError("connect should be refused")
    except ConnectionRefusedError:
        pass
    simulator.refuse_connections(False)
    client2 = client_for(simulator)
    simulator.set_reply_delay(0.2)
    start = time.monotonic()
    client2.command("api version")
    assert time.monotonic() - start >= 0.2


def _bridged_pair(client: RawClient, a: str, b: str, a_vars: str = "") -> None:
    line = (
        f"originate {{origination_uuid={a}{a_vars}}}{GW}/15105550122 &bridge({{origination_uuid={b}}}{GW}/14155550111)"
    )
    assert job_result(client, line)[0] == f"+OK {a}\n"
    client.events_until(lambda e: e.name == "CHANNEL_BRIDGE")


def test_b_hangup_unbridges_a_then_a_ends_normal_clearing_by_default(simulator: Simulator) -> None:
    # Given an answered click-to-call A -> B
    client = client_for(simulator)
    _bridged_pair(client, "A4", "B4")
    # When the far end of B hangs up with an unusual cause
    assert simulator.hangup("B4", "NORMAL_UNSPECIFIED")
    events = client.events_until(lambda e: e.name == "CHANNEL_DESTROY" and e.unique_id == "A4")
    # Then B's hangup comes first, A's bridge returns (UNBRIDGE from A), and A's app list ends: NORMAL_CLEARING
    order = [(e.name, e.unique_id) for e in events if e.name in ("CHANNEL_HANGUP", "CHANNEL_UNBRIDGE")]
    assert order == [("CHANNEL_HANGUP", "B4"), ("CHANNEL_UNBRIDGE", "A4"), ("CHANNEL_HANGUP", "A4")]
    causes = {e.unique_id: e.get("Hangup-Cause") for e in events if e.name == "CHANNEL_HANGUP"}
    assert causes == {"B4": "NORMAL_UNSPECIFIED", "A4": "NORMAL_CLEARING"}


def test_b_hangup_with_hangup_after_bridge_gives_a_the_cause_of_b(simulator: Simulator) -> None:
    client = client_for(simulator)
    _bridged_pair(client, "A5", "B5", ",hangup_after_bridge=true")
    assert client.command("api uuid_kill B5 CALL_REJECTED").body == "+OK\n"
    events = client.events_until(lambda e: e.name == "CHANNEL_HANGUP" and e.unique_id == "A5")
    assert events[-1].get("Hangup-Cause") == "CALL_REJECTED"


def test_b_hangup_with_park_after_bridge_parks_a(simulator: Simulator) -> None:
    client = client_for(simulator)
    _bridged_pair(client, "A6", "B6", ",park_after_bridge=true")
    assert client.command("api uuid_kill B6").body == "+OK\n"
    events = client.events_until(lambda e: e.name == "CHANNEL_PARK" and e.unique_id == "A6")
    assert [e.name for e in events if e.unique_id == "A6"] == ["CHANNEL_UNBRIDGE", "CHANNEL_EXECUTE", "CHANNEL_PARK"]
    assert client.command("api uuid_exists A6").body == "true"
    assert client.command("api uuid_exists B6").body == "false"


def test_plain_events_built_from_cached_header_groups_match_their_headers(simulator: Simulator) -> None:
    # Given a bus subscriber that checks every event's plain bytes against a serialisation of its headers
    from redswitch.protocol.codec import event_plain_frame, plain_body_section, serialize_headers_plain

    checked: list[tuple[str, bool]] = []

    class Check:
        closing = False

        def may_take(self, name: str, subclass: str | None, unique_id: str | None) -> bool:
            return True

        def deliver(self, ev: Any) -> None:
            got = ev.wire("plain")
            rows = serialize_headers_plain(ev._rest_pairs())
            checked.append((ev.name, got == event_plain_frame(ev.head_plain + rows + plain_body_section(ev.body))))

        def backlog(self) -> int:
            return 0

    simulator.bus.subscribers.add(Check())
    client = client_for(simulator)
    # When a click-to-call is bridged, a variable changes mid-call, someone eavesdrops, and it all hangs up
    job_result(client, f"originate {{origination_uuid=C1,dial_id=c9}}{GW}/15105550122 &bridge({{call_side=1}}{GW}/2)")
    client.events_until(lambda e: e.name == "CHANNEL_BRIDGE")
    assert client.command("api uuid_setvar C1 dial_id c10").body.startswith("+OK")
    job_result(client, f"originate {{origination_uuid=S9}}{GW}/15105550177 &eavesdrop(C1)")
    client.command("api uuid_kill C1")
    client.events_until(lambda e: e.name == "CHANNEL_DESTROY" and e.unique_id == "S9")
    # Then every event's bytes were exactly its headers' serialisation
    assert len(checked) >= 25
    assert [name for name, same in checked if not same] == []


def test_events_nobody_takes_are_not_sent_but_still_use_up_their_sequence_numbers(simulator: Simulator) -> None:
    # Given a connection that takes only CHANNEL_ANSWER, and one that runs the calls and takes no events
    answers, runner = RawClient(simulator.port), RawClient(simulator.port)
    answers.login()
    runner.login()
    answers.command("event plain CHANNEL_ANSWER")

    def call(n: int) -> None:
        assert runner.command(f"api originate {{origination_uuid=q-{n}}}{GW}/15105550100 &park()").body.startswith(
            "+OK"
        )
        assert runner.command(f"api uuid_kill q-{n}").body == "+OK\n"

    def answer_sequence() -> int:
        (answer,) = answers.events_until(lambda e: e.name == "CHANNEL_ANSWER")
        return int(answer.get("Event-Sequence") or 0)

    # When two calls run while only the answers are taken, then a third while another connection takes all
    call(1)
    first = answer_sequence()
    call(2)
    second = answer_sequence()
    every = client_for(simulator)
    call(3)
    third = answer_sequence()
    seen = every.events_until(lambda e: e.name == "CHANNEL_ANSWER")
    # Then a call cycle uses as many sequence numbers whether its events were built or not
    assert second - first == third - second > 1
    # and the numbers of the events that were sent run on without a gap, the answer's among them
    numbers = [int(e.get("Event-Sequence") or 0) for e in seen]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and numbers[-1] == third


# ------------------------------------------------------------------------------------------- early media


def test_early_media_returns_the_originate_before_the_answer_unless_ignored(simulator: Simulator) -> None:
    # Given a number whose carrier plays early media (183) for 1.5 s before the person answers
    client = client_for(simulator)
    # When it is originated as FreeSWITCH does by default, the originate returns at the early media
    start = time.monotonic()
    body, events = job_result(client, f"originate {{origination_uuid=em-a}}{GW}/15105550183 &park()")
    early_return = time.monotonic() - start
    assert body == "+OK em-a\n"
    names = [e.name for e in events if e.unique_id == "em-a"]
    assert names[-1] == "CHANNEL_PROGRESS_MEDIA" and "CHANNEL_ANSWER" not in names
    media = events[-2] if events[-1].name == "BACKGROUND_JOB" else events[-1]
    assert media.get("Answer-State") == "early" and media.get("Channel-Call-State") == "RINGING"
    assert media.get("variable_endpoint_disposition") == "EARLY MEDIA"
    assert early_return < 1.0
    # and the person answers later all the same
    answer = client.events_until(lambda e: e.name == "CHANNEL_ANSWER" and e.unique_id == "em-a", timeout=5)[-1]
    assert answer.get("Channel-Call-State") == "EARLY" and answer.get("variable_endpoint_disposition") == "ANSWER"
    # When it is originated with ignore_early_media=true, the originate waits for the answer
    start = time.monotonic()
    body, events = job_result(
        client, f"originate {{origination_uuid=em-b,ignore_early_media=true}}{GW}/15105550183 &park()"
    )
    assert body == "+OK em-b\n"
    assert time.monotonic() - start >= 1.4
    names = [e.name for e in events if e.unique_id == "em-b"]
    assert names.index("CHANNEL_PROGRESS_MEDIA") < names.index("CHANNEL_ANSWER")


def test_early_media_that_never_answers_ends_no_answer_and_its_app_never_runs(simulator: Simulator) -> None:
    client = client_for(simulator)
    line = (
        f"originate {{origination_uuid=em-c,ignore_early_media=true,originate_timeout=1}}{GW}/15105550187 "
        f"&bridge({{origination_uuid=em-c-b}}{GW}/14155550111)"
    )
    body, events = job_result(client, line)
    assert body == "-ERR NO_ANSWER\n"
    assert "CHANNEL_PROGRESS_MEDIA" in [e.name for e in events if e.unique_id == "em-c"]
    assert not any(e.unique_id == "em-c-b" for e in events)
    assert "em-c-b" not in simulator.channels() and "em-c" not in simulator.channels()


def test_bridge_inherits_the_callers_ignore_early_media_unless_its_dial_string_sets_it(simulator: Simulator) -> None:
    # Given an answered A whose originate ignored early media, bridging to a B whose carrier plays early media
    client = client_for(simulator)
    inherited = f"&bridge({{origination_uuid=eb-1}}{GW}/14155550183)"
    explicit = f"&bridge({{origination_uuid=eb-2,ignore_early_media=false}}{GW}/14155550183)"
    for a_uuid, app in (("ea-1", inherited), ("ea-2", explicit)):
        job_result(client, f"originate {{origination_uuid={a_uuid},ignore_early_media=true}}{GW}/15105550100 {app}")
    events = client.events_until(lambda e: e.name == "CHANNEL_BRIDGE" and e.unique_id == "ea-2", timeout=5)
    # Then a B that set ignore_early_media=false is bridged at its early media, before it answers
    assert not any(e.name == "CHANNEL_ANSWER" and e.unique_id == "eb-2" for e in events)
    # And a B that left it unset took the caller's and is bridged only once it answered
    assert not any(e.name == "CHANNEL_BRIDGE" and e.unique_id == "ea-1" for e in events)
    later = client.events_until(lambda e: e.name == "CHANNEL_BRIDGE" and e.unique_id == "ea-1", timeout=5)
    names = [(e.name, e.unique_id) for e in events + later]
    assert names.index(("CHANNEL_ANSWER", "eb-1")) < names.index(("CHANNEL_BRIDGE", "ea-1"))
    assert simulator.channels()["eb-1"].variables["originate_early_media"] == "false"
    assert simulator.channels()["eb-2"].variables["originate_early_media"] == "true"


def test_a_scenario_rule_gives_any_number_early_media() -> None:
    scenario = Scenario.from_dict({"numbers": [{"suffix": "7777", "outcome": "answer", "early_media": 2.5}]})
    assert scenario.outcome_for("15105557777").early_media == 2.5
    assert scenario.outcome_for("15105557778").early_media is None
    assert scenario.outcome_for("15105550183").early_media == 1.5
    failing = Scenario.from_dict({"numbers": [{"suffix": "1111", "outcome": "USER_BUSY", "early_media": 1}]})
    assert failing.outcome_for("1111").early_media == 1.0 and failing.outcome_for("1111").cause == "USER_BUSY"


def test_a_bridge_nobody_answers_ends_its_caller_as_continue_on_fail_says(simulator: Simulator) -> None:
    # switch_channel_handle_cause: no answer is a reason to continue unless continue_on_fail says otherwise;
    # after &bridge() nothing is left to run, so the caller then ends NORMAL_CLEARING
    client = client_for(simulator)
    cases = {"cf-default": "", "cf-false": "continue_on_fail=false,", "cf-listed": "continue_on_fail=USER_BUSY,"}
    for uuid, extra in cases.items():
        b_leg = f"&bridge({{originate_timeout=1}}{GW}/14155550408)"
        job_result(client, f"originate {{{extra}origination_uuid={uuid}}}{GW}/15105550100 {b_leg}")
    ends: dict[str, str] = {}
    while len(ends) < len(cases):
        hangup = client.events_until(lambda e: e.name == "CHANNEL_HANGUP" and e.unique_id in cases, timeout=5)[-1]
        ends[hangup.unique_id or ""] = hangup.get("Hangup-Cause") or ""
    assert ends == {"cf-default": "NORMAL_CLEARING", "cf-false": "NO_ANSWER", "cf-listed": "NO_ANSWER"}
    # a busy callee ends the caller with its cause either way
    job_result(client, f"originate {{origination_uuid=cf-busy}}{GW}/15105550100 &bridge({GW}/14155550486)")
    busy = client.events_until(lambda e: e.name == "CHANNEL_HANGUP" and e.unique_id == "cf-busy", timeout=5)[-1]
    assert busy.get("Hangup-Cause") == "USER_BUSY"

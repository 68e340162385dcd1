"""``hupall`` as mod_commands' hupall_api_function answers it: the cause, the matching form, the reply text."""

from __future__ import annotations

from redswitch.simulator import Simulator
from tests.esl_raw import RawClient

GW = "sofia/gateway/gw"


def client_for(sim: Simulator) -> RawClient:
    client = RawClient(sim.port)
    client.login()
    client.command("event plain CHANNEL_HANGUP BACKGROUND_JOB")
    return client


def answered(client: RawClient, uid: str, variables: str = "") -> None:
    extra = f",{variables}" if variables else ""
    client.command(f"bgapi originate {{origination_uuid={uid}{extra}}}{GW}/15105550100 &park()")
    job = client.events_until(lambda e: e.name == "BACKGROUND_JOB")[-1]
    assert job.body == f"+OK {uid}\n"


def hangup_causes(client: RawClient, count: int) -> dict[str, str]:
    causes: dict[str, str] = {}
    while len(causes) < count:
        ev = client.events_until(lambda e: e.name == "CHANNEL_HANGUP")[-1]
        causes[ev.unique_id or ""] = ev.get("Hangup-Cause") or ""
    return causes


def test_bare_hupall_hangs_up_everything_with_manager_request(simulator: Simulator) -> None:
    # Given two answered calls
    client = client_for(simulator)
    answered(client, "h-1")
    answered(client, "h-2")
    # When hupall comes without arguments
    reply = client.command("api hupall").body
    # Then FreeSWITCH's default cause is used, in the reply and on every channel
    assert reply == "+OK hangup all channels with cause MANAGER_REQUEST\n"
    assert hangup_causes(client, 2) == {"h-1": "MANAGER_REQUEST", "h-2": "MANAGER_REQUEST"}
    assert simulator.channels() == {}


def test_hupall_reads_the_cause_as_str2cause_does(simulator: Simulator) -> None:
    client = client_for(simulator)
    # a name in any case, a number, NONE (0), an unknown name, an unknown number
    assert client.command("api hupall user_busy").body == "+OK hangup all channels with cause USER_BUSY\n"
    assert client.command("api hupall 17").body == "+OK hangup all channels with cause USER_BUSY\n"
    assert client.command("api hupall 0").body == "+OK hangup all channels with cause MANAGER_REQUEST\n"
    assert client.command("api hupall NO_SUCH").body == "+OK hangup all channels with cause NORMAL_CLEARING\n"
    assert client.command("api hupall 999").body == "+OK hangup all channels with cause UNKNOWN\n"


def test_hupall_with_a_variable_hangs_up_only_the_matching_channels(simulator: Simulator) -> None:
    # Given three calls, two of them for campaign c1
    client = client_for(simulator)
    answered(client, "m-1", "campaign=c1")
    answered(client, "m-2", "campaign=c2")
    answered(client, "m-3", "campaign=c1")
    # When hupall names the variable and its value
    reply = client.command("api hupall NORMAL_CLEARING campaign c1").body
    # Then only those two are hung up, with the single-pair reply text
    assert reply == "+OK hangup all channels matching [campaign]=[c1] with cause: NORMAL_CLEARING\n"
    assert hangup_causes(client, 2) == {"m-1": "NORMAL_CLEARING", "m-3": "NORMAL_CLEARING"}
    assert set(simulator.channels()) == {"m-2"}


def test_hupall_with_several_pairs_needs_every_pair_to_match(simulator: Simulator) -> None:
    client = client_for(simulator)
    answered(client, "p-1", "campaign=c1,side=0")
    answered(client, "p-2", "campaign=c1,side=1")
    reply = client.command("api hupall USER_BUSY campaign c1 side 1").body
    assert reply == "+OK hangup all channels matching [campaign]=[c1]... with cause: USER_BUSY\n"
    assert hangup_causes(client, 1) == {"p-2": "USER_BUSY"}
    assert set(simulator.channels()) == {"p-1"}


def test_hupall_matches_caller_profile_fields_like_channel_variables(simulator: Simulator) -> None:
    client = client_for(simulator)
    answered(client, "f-1")
    reply = client.command("api hupall NORMAL_CLEARING uuid f-1").body
    assert reply == "+OK hangup all channels matching [uuid]=[f-1] with cause: NORMAL_CLEARING\n"
    assert hangup_causes(client, 1) == {"f-1": "NORMAL_CLEARING"}


def test_hupall_with_no_match_hangs_up_nothing(simulator: Simulator) -> None:
    client = client_for(simulator)
    answered(client, "n-1", "campaign=c1")
    reply = client.command("api hupall NORMAL_CLEARING campaign nobody").body
    assert reply == "+OK hangup all channels matching [campaign]=[nobody] with cause: NORMAL_CLEARING\n"
    assert set(simulator.channels()) == {"n-1"}


def test_hupall_with_a_lone_variable_name_hangs_up_everything(simulator: Simulator) -> None:
    # FreeSWITCH pairs argv[1..]: an unpaired name is no filter at all
    client = client_for(simulator)
    answered(client, "l-1", "campaign=c1")
    answered(client, "l-2", "campaign=c2")
    reply = client.command("api hupall NORMAL_CLEARING campaign").body
    assert reply == "+OK hangup all channels with cause NORMAL_CLEARING\n"
    assert hangup_causes(client, 2) == {"l-1": "NORMAL_CLEARING", "l-2": "NORMAL_CLEARING"}

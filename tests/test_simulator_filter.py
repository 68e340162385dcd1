"""The ``filter`` command's replies and effects, as mod_event_socket's parse_command has them."""

from __future__ import annotations

from redswitch.simulator import Simulator
from tests.esl_raw import RawClient

GW = "sofia/gateway/gw"


def logged_in(sim: Simulator) -> RawClient:
    client = RawClient(sim.port)
    client.login()
    return client


def reply(client: RawClient, line: str) -> str:
    frame = client.command(line)
    assert frame.content_type == "command/reply"
    return frame.reply_text or ""


def test_filter_delete_without_a_header_is_invalid_syntax(simulator: Simulator) -> None:
    client = logged_in(simulator)
    frame = client.command("filter delete")
    assert frame.headers == (("Content-Type", "command/reply"), ("Reply-Text", "-ERR invalid syntax"))
    assert reply(client, "filter Unique-ID") == "-ERR invalid syntax"


def test_filter_without_a_space_is_no_command(simulator: Simulator) -> None:
    assert reply(logged_in(simulator), "filter") == "-ERR command not found"


def test_filter_delete_forms_reply_with_the_header_and_value(simulator: Simulator) -> None:
    client = logged_in(simulator)
    assert reply(client, "filter delete all") == "+OK filter deleted. [all][]"
    assert reply(client, "filter delete Unique-ID") == "+OK filter deleted. [Unique-ID][]"
    assert reply(client, "filter delete Unique-ID abc") == "+OK filter deleted. [Unique-ID][abc]"
    assert reply(client, "filter delete ") == "+OK filter deleted. [][]"


def test_filter_add_keyword_and_the_value_kept_as_sent(simulator: Simulator) -> None:
    client = logged_in(simulator)
    assert reply(client, "filter add Unique-ID abc") == "+OK filter added. [Unique-ID]=[abc]"
    assert reply(client, "FILTER Unique-ID a b") == "+OK filter added. [Unique-ID]=[a b]"
    assert reply(client, "filter add Unique-ID") == "+OK filter added. [Unique-ID]=[(null)]"


def channel_events(sim: Simulator, filters: list[str], uid: str) -> list[str]:
    """Names of the events ``uid`` fires on a subscriber that sent ``filters`` first."""
    sub = logged_in(sim)
    sub.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP")
    for line in filters:
        sub.command(line)
    caller = logged_in(sim)
    assert caller.command(f"api originate {{origination_uuid={uid}}}{GW}/15105550100 &park()").body == f"+OK {uid}\n"
    caller.command(f"api uuid_kill {uid}")
    caller.command(f"api originate {{origination_uuid=other-{uid}}}{GW}/15105550100 &park()")
    caller.command(f"api uuid_kill other-{uid}")
    events = sub.events_until(lambda e: e.unique_id == f"other-{uid}" and e.name == "CHANNEL_HANGUP")
    return [f"{e.name} {e.unique_id}" for e in events]


def test_filter_delete_of_a_header_removes_its_filters_in_any_case(simulator: Simulator) -> None:
    # Given filters on two uuids, then the header deleted (named in another case)
    lines = ["filter Unique-ID x1", "filter Unique-ID x2", "filter delete unique-id"]
    # Then no filter is left: every channel's events come through
    got = channel_events(simulator, lines, "d1")
    assert "CHANNEL_ANSWER d1" in got and "CHANNEL_ANSWER other-d1" in got


def test_filter_delete_of_one_value_keeps_the_others(simulator: Simulator) -> None:
    lines = ["filter Unique-ID other-d2", "filter Unique-ID d2", "filter delete Unique-ID d2"]
    got = channel_events(simulator, lines, "d2")
    assert "CHANNEL_ANSWER d2" not in got
    assert got[-2:] == ["CHANNEL_ANSWER other-d2", "CHANNEL_HANGUP other-d2"]


def test_filter_delete_all_clears_every_filter(simulator: Simulator) -> None:
    lines = ["filter Unique-ID nobody", "filter Event-Name CHANNEL_HANGUP", "filter delete all"]
    got = channel_events(simulator, lines, "d3")
    assert "CHANNEL_ANSWER d3" in got

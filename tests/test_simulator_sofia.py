"""``sofia status`` and its gateway views, byte for byte as mod_sofia's cmd_status lays them out."""

from __future__ import annotations

from redswitch.simulator import Scenario, Simulator
from tests.esl_raw import RawClient
from tests.fixtures_sim import SimFactory

LINE = "=" * 97


def printf(fmt: str, *args: object) -> str:
    """C's printf, to check each line against the format string copied from mod_sofia.c."""
    return fmt % args


def api(sim: Simulator, line: str) -> str:
    client = RawClient(sim.port)
    client.login()
    frame = client.command(f"api {line}")
    assert frame.content_type == "api/response"
    return frame.body


def carrier_sim(factory: SimFactory) -> Simulator:
    return factory(Scenario.default().with_changes(gateways=("talk_call_provider", "backup"), profile="external"))


def test_sofia_status_lists_the_profile_and_its_gateways(simulator_factory: SimFactory) -> None:
    sim = carrier_sim(simulator_factory)
    row = "%25s\t%s\t  %40s\t%s\n"  # cmd_status's printf formats, copied from mod_sofia.c
    want = (
        row % ("Name", "   Type", "Data", "State")
        + f"{LINE}\n"
        + printf("%25s\t%s\t  %40s\t%s (%u)\n", "external", "profile", "sip:mod_sofia@127.0.0.1:5060", "RUNNING", 0)
        + row % ("external::talk_call_provider", "gateway", "sip:FreeSWITCH@talk_call_provider", "NOREG")
        + row % ("external::backup", "gateway", "sip:FreeSWITCH@backup", "NOREG")
        + f"{LINE}\n"
        + "1 profile 0 aliases\n"
    )
    assert api(sim, "sofia status") == want


def test_sofia_status_counts_the_channels_in_use_on_the_profile(simulator_factory: SimFactory) -> None:
    sim = carrier_sim(simulator_factory)
    client = RawClient(sim.port)
    client.login()
    assert client.command("api originate sofia/gateway/backup/15105550100 &park()").body.startswith("+OK ")
    assert "\tRUNNING (1)\n" in api(sim, "sofia status")


def test_sofia_status_without_gateways_lists_only_the_profile(simulator: Simulator) -> None:
    lines = api(simulator, "sofia status").splitlines()
    profile = printf("%25s\t%s\t  %40s\t%s (%u)", "internal", "profile", "sip:mod_sofia@127.0.0.1:5060", "RUNNING", 0)
    assert lines[2] == profile
    assert lines[3:] == [LINE, "1 profile 0 aliases"]


def test_sofia_status_gateway_alone_summarises_the_gateways(simulator_factory: SimFactory) -> None:
    sim = carrier_sim(simulator_factory)
    row = "%25s\t%32s\t%s\t%6.2f\t%u/%u\t%u/%u\n"
    want = (
        printf(
            "%25s\t%32s\t%s\t%9s\t%s\t%s\n",
            "Profile::Gateway-Name",
            "    Data    ",
            "State",
            "Ping Time",
            "IB Calls(F/T)",
            "OB Calls(F/T)",
        )
        + f"{LINE}\n"
        + row % ("external::talk_call_provider", "sip:FreeSWITCH@talk_call_provider", "NOREG", 0.0, 0, 0, 0, 0)
        + row % ("external::backup", "sip:FreeSWITCH@backup", "NOREG", 0.0, 0, 0, 0, 0)
        + f"{LINE}\n"
        + "2 gateways: Inbound(Failed/Total): 0/0,Outbound(Failed/Total):0/0\n"
    )
    assert api(sim, "sofia status gateway") == want
    assert api(sim, "sofia status anything") == want  # cmd_status: any single word is the summary


def test_sofia_status_gateway_name_prints_the_detail_block(simulator_factory: SimFactory) -> None:
    sim = carrier_sim(simulator_factory)
    body = api(sim, "sofia status gateway talk_call_provider")
    lines = body.split("\n")
    assert lines[0] == LINE and lines[-2] == LINE and lines[-1] == ""
    assert lines[1:6] == [
        "Name    \ttalk_call_provider",
        "Profile \texternal",
        "Scheme  \tDigest",
        "Realm   \ttalk_call_provider",
        "Username\tFreeSWITCH",
    ]
    assert "Contact \t<sip:gw+talk_call_provider@127.0.0.1:5060;transport=udp;gw=talk_call_provider>" in lines
    assert lines[19:22] == ["State   \tNOREG", "Status  \tUP", lines[21]]
    assert lines[21].startswith("Uptime  \t") and lines[21].endswith("s")
    assert lines[-3] == "FailedCallsOUT\t0"
    assert api(sim, "sofia status gateway external::backup").split("\n")[1] == "Name    \tbackup"


def test_unknown_gateway_profile_and_command_answer_as_mod_sofia(simulator_factory: SimFactory) -> None:
    sim = carrier_sim(simulator_factory)
    assert api(sim, "sofia status gateway nope") == "Invalid Gateway!\n"
    assert api(sim, "sofia status profile nope") == "Invalid Profile!\n"
    assert api(sim, "sofia status what ever") == "Invalid Syntax!\n"
    assert api(sim, "sofia frobnicate") == "Unknown Command [frobnicate]\n"
    assert api(sim, "sofia").startswith("USAGE:\n----")


def test_without_scenario_gateways_every_gateway_has_a_detail(simulator: Simulator) -> None:
    # the scenario accepts every gateway for originate, so the detail agrees
    assert api(simulator, "sofia status gateway anything").split("\n")[1] == "Name    \tanything"
    assert api(simulator, "sofia status gateway").endswith(
        f"{LINE}\n0 gateways: Inbound(Failed/Total): 0/0,Outbound(Failed/Total):0/0\n"
    )

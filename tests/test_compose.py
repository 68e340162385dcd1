"""The compose files, the image and .env.example, checked against the code (Docker itself is not needed).

Every service's command must be a real entry point, every variable it sets one the settings know, and
.env.example must list exactly the settings, with values the settings accept.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from redswitch.cli import build_parser
from redswitch.config import Settings, setting_names
from redswitch.simulator.scenario import DEFAULT_RULES
from tests import yaml_subset
from tests.payloads import job

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose"
CONF = COMPOSE / "freeswitch" / "conf"
FILES = ["compose.yaml", "compose.simulator.yaml"]
SERVICES = {"redis", "freeswitch", "worker", "bridge", "listener", "scheduler", "dashboard"}
#: Variables read by Dramatiq itself (its Prometheus middleware, its worker), not by our settings.
DRAMATIQ_VARIABLE = re.compile(r"dramatiq_[a-z_]+")


def load(name: str) -> dict[str, Any]:
    data = yaml_subset.load((COMPOSE / name).read_text())
    assert isinstance(data, dict)
    return data


def subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")  # argparse keeps subparsers private
    return set(action.choices)  # type: ignore[arg-type]


def entry_point(command: list[str]) -> list[str]:
    """The program and arguments a service runs, looking through ``sh -c "exec ..."``."""
    if command[:2] == ["sh", "-c"]:
        words = shlex.split(command[2])
        return words[1:] if words[0] == "exec" else words
    return command


def ours(service: dict[str, Any]) -> bool:
    """A service built from this repository (``build: ..``, or a build context of ``..`` with its args)."""
    build = service.get("build")
    return build == ".." or (isinstance(build, dict) and build.get("context") == "..")


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (COMPOSE / ".env.example").read_text().splitlines()]
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2 and not pair[0].startswith("#")}


@pytest.mark.parametrize("name", FILES)
def test_compose_file_runs_every_redswitch_process(name: str) -> None:
    services = load(name)["services"]
    assert set(services) == SERVICES
    built = {key: service for key, service in services.items() if ours(service)}
    commands = {key: entry_point(service["command"]) for key, service in built.items()}
    assert commands["worker"][:2] == ["dramatiq", "redswitch.actors"]
    assert {commands[key][1] for key in ("bridge", "listener", "scheduler")} == {"bridge", "listen", "schedule"}
    # the dashboard: opt-in, its own image with the extra, a token (never --no-auth), the host's loopback only
    dashboard = services["dashboard"]
    assert commands["dashboard"][1] == "dashboard" and "--no-auth" not in commands["dashboard"]
    assert dashboard["profiles"] == ["dashboard"] and dashboard["build"]["args"]["EXTRAS"] == "[dashboard]"
    assert all(port.startswith("127.0.0.1:") for port in dashboard["ports"])


@pytest.mark.parametrize("name", FILES)
def test_compose_commands_are_real_entry_points(name: str) -> None:
    known = subcommands()
    for key, service in load(name)["services"].items():
        if not ours(service):
            continue
        program, *args = entry_point(service["command"])
        if program == "redswitch":
            assert args[0] in known, f"{key}: redswitch has no subcommand {args[0]!r}"
            build_parser().parse_args(args)  # exits (fails the test) on unknown options
        else:
            assert program == "dramatiq", key
            assert importlib.util.find_spec(args[0]) is not None, f"{key}: no module {args[0]}"


def freeswitch_variables() -> set[str]:
    """The environment variables our FreeSWITCH configuration reads (``env-set`` pre-processing)."""
    found = set()
    for path in CONF.rglob("*.xml"):
        for p in ET.parse(path).getroot().iter("X-PRE-PROCESS"):
            if p.get("cmd") == "env-set":
                found.add(p.get("data", "").split("=$", 1)[1])
    return found


@pytest.mark.parametrize("name", FILES)
def test_compose_sets_only_variables_the_settings_know(name: str) -> None:
    names = setting_names()
    for key, service in load(name)["services"].items():
        known = names | freeswitch_variables() if key == "freeswitch" and name == "compose.yaml" else names
        for variable in service.get("environment") or {}:
            assert variable in known or DRAMATIQ_VARIABLE.fullmatch(variable), f"{key}: unknown {variable}"
        if ours(service):
            assert service["env_file"] == ".env", key


@pytest.mark.parametrize("name", FILES)
def test_compose_files_mount_files_that_exist(name: str) -> None:
    for service in load(name)["services"].values():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).is_file(), source
        build = service.get("build")
        if build:
            context = build["context"] if isinstance(build, dict) else build
            assert (COMPOSE / context / "Dockerfile").is_file()


def test_env_example_lists_exactly_the_settings_with_valid_values() -> None:
    example = env_example()
    assert set(example) == setting_names()
    Settings.from_env(example)  # raises ConfigError naming any bad value


def test_dockerfile_copies_what_exists_and_installs_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            assert all((ROOT / source).exists() for source in sources), line
    assert 'pip install ".${EXTRAS}"' in dockerfile and 'ARG EXTRAS=""' in dockerfile  # the package, extras asked
    # docker run of the image with no command starts every process (it printed --help before)
    assert dockerfile.rstrip().splitlines()[-1] == 'CMD ["redswitch", "run"]'


def test_event_socket_listens_on_loopback_unless_compose_says_otherwise() -> None:
    root = ET.parse(CONF / "autoload_configs" / "event_socket.conf.xml").getroot()
    params = {p.get("name"): p.get("value") for p in root.iter("param")}
    assert params["listen-port"] == "8021"
    # Each of listen-ip and password is a variable set to a default, then from the environment when it has it
    preprocess = [(p.get("cmd"), p.get("data", "")) for p in root.iter("X-PRE-PROCESS")]
    defaults = {}
    for param, default, variable in (
        ("listen-ip", "127.0.0.1", "FREESWITCH_ESL_LISTEN_IP"),
        ("password", "ClueCon", "ESL_PASSWORD"),
    ):
        name = re.fullmatch(r"\$\$\{(\w+)\}", params[param] or "")
        assert name is not None, param
        assert preprocess.index(("set", f"{name.group(1)}={default}")) < preprocess.index(
            ("env-set", f"{name.group(1)}=${variable}")
        )
        defaults[variable] = default
    # compose opens it to the compose network (the port is not published); its ESL_PASSWORD comes from .env
    freeswitch = load("compose.yaml")["services"]["freeswitch"]
    assert freeswitch["environment"] == {"FREESWITCH_ESL_LISTEN_IP": "0.0.0.0"}
    assert freeswitch["env_file"] == ".env" and "ESL_PASSWORD" in env_example()
    assert not any(port.startswith("8021") for port in freeswitch.get("ports", []))
    # loopback and private networks only (a client must pass every ACL, so there is exactly one)
    acls = [p.get("value") for p in root.iter("param") if p.get("name") == "apply-inbound-acl"]
    assert acls == ["127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"]


def test_compose_mounts_every_freeswitch_config_file_of_ours() -> None:
    volumes = load("compose.yaml")["services"]["freeswitch"]["volumes"]
    mounted = {v.split(":")[0]: v.split(":")[1] for v in volumes}
    for path in CONF.rglob("*.xml"):
        relative = path.relative_to(CONF).as_posix()
        assert mounted.get(f"./freeswitch/conf/{relative}") == f"/etc/freeswitch/{relative}", relative


def gateways() -> dict[str, dict[str, str]]:
    root = ET.parse(CONF / "sip_profiles" / "external" / "redswitch.xml").getroot()
    return {g.get("name", ""): {p.get("name", ""): p.get("value", "") for p in g.iter("param")} for g in root}


def test_gateways_cover_the_end_to_end_tests_and_reach_the_carrier_on_loopback() -> None:
    carrier = ET.parse(CONF / "sip_profiles" / "carrier.xml").getroot()
    settings = {p.get("name"): p.get("value") for p in carrier.iter("param")}
    assert settings["sip-ip"] == settings["rtp-ip"] == "127.0.0.1" and settings["context"] == "carrier"
    found = gateways()
    # the jobs' default call_provider (tests/payloads.py) and the reconciliation tests' "gw"
    assert {job()["call_provider"], "gw"} <= set(found)
    for name, params in found.items():
        assert params["proxy"] == f"127.0.0.1:{settings['sip-port']}", name
        assert params["register"] == "false", name


def test_carrier_dialplan_has_every_magic_number_of_the_simulator() -> None:
    root = ET.parse(CONF / "dialplan" / "carrier.xml").getroot()
    context = next(c for c in root.iter("context") if c.get("name") == "carrier")
    expressions = [c.get("expression", "") for c in context.iter("condition")]
    suffixes = [rule.suffix for rule in DEFAULT_RULES]
    assert None not in suffixes
    assert sorted(e.removesuffix("$") for e in expressions if e.endswith("$") and e[:-1].isdigit()) == sorted(
        str(s) for s in suffixes
    )
    assert expressions[-1] == r"^\+?\d+$"  # any other number answers, tried last


@pytest.mark.parametrize("name", FILES)
def test_subset_reader_agrees_with_pyyaml(name: str) -> None:
    assert yaml.safe_load((COMPOSE / name).read_text()) == load(name)


def test_subset_reader_reads_nested_blocks_and_flow_values() -> None:
    text = 'a:\n  b: [1, "x"]\n  c:\n    - "p:q"\n    - d: true\n      e: 5s  # comment\nf: {}\n'
    assert yaml_subset.load(text) == {"a": {"b": [1, "x"], "c": ["p:q", {"d": True, "e": "5s"}]}, "f": {}}


def test_operations_doc_lists_every_setting() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    missing = sorted(name for name in setting_names() if f"`{name}`" not in text)
    assert missing == []

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
from tests import yaml_subset

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose"
FILES = ["compose.yaml", "compose.simulator.yaml"]
SERVICES = {"redis", "freeswitch", "worker", "bridge", "listener", "scheduler"}
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


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (COMPOSE / ".env.example").read_text().splitlines()]
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2 and not pair[0].startswith("#")}


@pytest.mark.parametrize("name", FILES)
def test_compose_file_runs_every_redswitch_process(name: str) -> None:
    services = load(name)["services"]
    assert set(services) == SERVICES
    ours = {key: service for key, service in services.items() if service.get("build") == ".."}
    commands = {key: entry_point(service["command"]) for key, service in ours.items()}
    assert commands["worker"][:2] == ["dramatiq", "redswitch.actors"]
    assert {commands[key][1] for key in ("bridge", "listener", "scheduler")} == {"bridge", "listen", "schedule"}


@pytest.mark.parametrize("name", FILES)
def test_compose_commands_are_real_entry_points(name: str) -> None:
    known = subcommands()
    for key, service in load(name)["services"].items():
        if service.get("build") != "..":
            continue
        program, *args = entry_point(service["command"])
        if program == "redswitch":
            assert args[0] in known, f"{key}: redswitch has no subcommand {args[0]!r}"
            build_parser().parse_args(args)  # exits (fails the test) on unknown options
        else:
            assert program == "dramatiq", key
            assert importlib.util.find_spec(args[0]) is not None, f"{key}: no module {args[0]}"


@pytest.mark.parametrize("name", FILES)
def test_compose_sets_only_variables_the_settings_know(name: str) -> None:
    names = setting_names()
    for key, service in load(name)["services"].items():
        for variable in service.get("environment") or {}:
            assert variable in names or DRAMATIQ_VARIABLE.fullmatch(variable), f"{key}: unknown {variable}"
        if service.get("build") == "..":
            assert service["env_file"] == ".env", key


@pytest.mark.parametrize("name", FILES)
def test_compose_files_mount_files_that_exist(name: str) -> None:
    for service in load(name)["services"].values():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).is_file(), source
        if service.get("build"):
            assert (COMPOSE / service["build"] / "Dockerfile").is_file()


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
    assert "pip install ." in dockerfile
    # docker run of the image with no command starts every process (it printed --help before)
    assert dockerfile.rstrip().splitlines()[-1] == 'CMD ["redswitch", "run"]'


def test_event_socket_config_listens_on_8021_with_the_password_from_the_environment() -> None:
    path = COMPOSE / "freeswitch" / "conf" / "autoload_configs" / "event_socket.conf.xml"
    root = ET.parse(path).getroot()
    params = {p.get("name"): p.get("value") for p in root.iter("param")}
    assert params["listen-port"] == "8021"
    assert params["listen-ip"] == "0.0.0.0"
    variable = re.fullmatch(r"\$\$\{(\w+)\}", params["password"] or "")
    assert variable is not None
    preprocess = [p.get("data", "") for p in root.iter("X-PRE-PROCESS")]
    assert f"{variable.group(1)}=printenv ESL_PASSWORD" in preprocess


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

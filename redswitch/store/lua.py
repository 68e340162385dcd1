"""The store's Lua scripts, read from the ``.lua`` files beside this module and run by their SHA.

A script may start with shared functions: ``admit.lua`` is ``org.lua``, ``rate.lua`` and ``log.lua`` followed by its
own text, so the single-Redis and the cluster admission run the very same decisions, and every script that
publishes an event appends it to the event log the same way (:data:`INCLUDES`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis

from redswitch.store import evalsha as scripts

_PACKAGE = "redswitch.store"
#: Files whose functions a script uses, put before its own text.
INCLUDES = {
    "admit": ("org", "rate", "log"),
    "recover": ("log", "change"),
    "claim": ("record", "log"),
    "claim_record": ("record",),
    "compact_log": ("log",),
    "events": ("log", "change"),
    "org_main": ("org",),
    "rate_main": ("rate",),
}


@dataclasses.dataclass(frozen=True)
class Script:
    """One script's whole text (its includes first); run by SHA, sent again only when Redis lost it."""

    name: str
    text: str

    def run(self, client: redis.Redis | Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return scripts.run(client, self.text, keys, args)

    def stage(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        scripts.stage(pipe, self.text, keys, args)


def source(name: str) -> str:
    """The text of ``<name>.lua`` as shipped."""
    return resources.files(_PACKAGE).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


@functools.cache
def script(name: str) -> Script:
    parts = [source(part) for part in (*INCLUDES.get(name, ()), name)]
    return Script(name, "\n".join(parts))


def names() -> list[str]:
    """Every shipped script (the tests read them all)."""
    folder = resources.files(_PACKAGE).joinpath("lua")
    return sorted(entry.name[: -len(".lua")] for entry in folder.iterdir() if entry.name.endswith(".lua"))

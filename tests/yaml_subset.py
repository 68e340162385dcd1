"""A reader for the small YAML subset our compose files use, so their test needs no YAML library.

Block mappings and sequences by indentation, ``#`` comments, scalars (plain, quoted, numbers, booleans) and
flow collections written as JSON (``["CMD", "redis-cli", "ping"]``, ``{}``). Anything else is an error, which
keeps the compose files within what this reader (and any YAML reader) agrees on.
"""

from __future__ import annotations

import json
import re
from typing import Any

Line = tuple[int, str]


def load(text: str) -> Any:
    lines = [line for line in (_strip(raw) for raw in text.splitlines()) if line is not None]
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise ValueError(f"unexpected indentation at: {lines[end][1]!r}")
    return value


def _strip(raw: str) -> Line | None:
    text, quote = [], ""
    for index, char in enumerate(raw):
        if quote:
            quote = "" if char == quote and raw[index - 1] != "\\" else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or raw[index - 1] == " "):
            break
        text.append(char)
    stripped = "".join(text).rstrip()
    if not stripped.strip():
        return None
    if "\t" in stripped[: len(stripped) - len(stripped.lstrip())]:
        raise ValueError(f"tab in indentation: {raw!r}")
    return len(stripped) - len(stripped.lstrip()), stripped.strip()


def _block(lines: list[Line], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent)


def _mapping(lines: list[Line], i: int, indent: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+):(?: (.*))?", lines[i][1])
        if match is None:
            raise ValueError(f"not a mapping entry: {lines[i][1]!r}")
        key, rest = match.group(1), (match.group(2) or "").strip()
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        i += 1
        if rest:
            out[key] = _scalar(rest)
        elif i < len(lines) and lines[i][0] > indent:
            out[key], i = _block(lines, i, lines[i][0])
        else:
            out[key] = None
    return out, i


def _sequence(lines: list[Line], i: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
        item = lines[i][1][2:].strip()
        if re.match(r"[A-Za-z0-9_.\-]+:( |$)", item):  # a mapping inside the sequence
            nested = [(indent + 2, item), *lines[i + 1 :]]
            value, used = _mapping(nested, 0, indent + 2)
            out.append(value)
            i += used
        else:
            out.append(_scalar(item))
            i += 1
    return out, i


def _scalar(text: str) -> Any:
    if text[0] in '[{"':
        return json.loads(text)
    if text[0] == "'":
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text

"""LOG_FORMAT: one JSON object per line for log pipelines, carrying the call's dial_id in the message."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from redswitch.config import Settings
from redswitch.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_log_format_writes_one_object_per_line(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    # Given LOG_FORMAT=json
    configure_logging(Settings.from_env({"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}))
    # When a module logs about a call, and an error with its traceback
    log = logging.getLogger("redswitch.test")
    log.info("dial_id=%s originate handed to FreeSWITCH", "d1")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("dial_id=%s failed", "d2")
    log.debug("not shown at INFO")
    # Then stderr holds exactly two JSON lines with level, logger and the formatted message
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("INFO", "redswitch.test", "dial_id=d1 originate handed to FreeSWITCH"),
        ("ERROR", "redswitch.test", "dial_id=d2 failed"),
    ]
    assert "RuntimeError: boom" in records[1]["exception"]
    assert "time" in records[0]


def test_text_log_format_is_the_default(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings.from_env({}))
    logging.getLogger("redswitch.test").warning("dial_id=%s parked", "d3")
    line = capsys.readouterr().err.strip()
    assert line.endswith("WARNING redswitch.test: dial_id=d3 parked")
    with pytest.raises(ValueError):
        json.loads(line)

"""LOG_FORMAT: one JSON object per line for log pipelines, carrying the call's dial_id in the message."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from redswitch.config import Settings
from redswitch.logs import adopt_in_worker, configure_logging
from tests.pipeline import Pipeline
from tests.servers import RedisServer


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


def test_json_lines_carry_the_ids_a_line_names_as_fields_of_their_own(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(Settings.from_env({"LOG_FORMAT": "json"}))
    log = logging.getLogger("redswitch.test")
    log.info("listener %s follows node %s", "l1", "fs1", extra={"listener": "l1", "node": "fs1"})
    record = json.loads(capsys.readouterr().err.splitlines()[0])
    assert (record["listener"], record["node"], record["message"]) == ("l1", "fs1", "listener l1 follows node fs1")
    assert "dial_id" not in record


def test_text_log_format_is_the_default(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings.from_env({}))
    logging.getLogger("redswitch.test").warning("dial_id=%s parked", "d3")
    line = capsys.readouterr().err.strip()
    assert line.endswith("WARNING redswitch.test: dial_id=d3 parked")
    with pytest.raises(ValueError):
        json.loads(line)


def test_a_worker_process_keeps_its_handlers_and_takes_log_format_and_log_level(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given logging as Dramatiq's CLI leaves it in a worker process: a handler on its log pipe, at INFO
    pipe = io.StringIO()
    logging.basicConfig(level=logging.INFO, stream=pipe, force=True)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    # When the worker adopts LOG_FORMAT=json and LOG_LEVEL=WARNING
    adopt_in_worker(Settings.from_env({"LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}))
    log = logging.getLogger("redswitch.test")
    log.info("dial_id=%s not shown at WARNING", "d4")
    log.warning("dial_id=%s parked", "d5")
    # Then its lines still go down the same pipe, as JSON, and only from WARNING up
    assert [json.loads(line)["message"] for line in pipe.getvalue().splitlines()] == ["dial_id=d5 parked"]


def test_without_log_level_the_worker_keeps_dramatiqs_level(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    logging.basicConfig(level=logging.DEBUG, stream=io.StringIO(), force=True)  # as `dramatiq -v -v`
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    adopt_in_worker(Settings.from_env({}))
    assert logging.getLogger().level == logging.DEBUG


def test_the_real_worker_writes_json_lines_with_log_format_json(redis_server: RedisServer) -> None:
    # Given the pipeline's worker started with LOG_FORMAT=json
    pipeline = Pipeline(redis_server.url, env={"LOG_FORMAT": "json"}).start()
    try:
        # When it handles a call
        pipeline.push(dial_id="logjson1", user_id="logjson1")
        assert pipeline.wait_for(lambda: "logjson1" in pipeline.full_log("worker")), pipeline.logs()
    finally:
        pipeline.stop()
    # Then every line it logged about the call is one JSON object
    lines = [line for line in pipeline.full_log("worker").splitlines() if "logjson1" in line]
    assert lines
    assert {json.loads(line)["logger"] for line in lines} == {"redswitch.actors.calls"}

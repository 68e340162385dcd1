"""Logging set-up: plain text for people, JSON lines for log pipelines (``LOG_FORMAT=json``)."""

from __future__ import annotations

import json
import logging
import os
import sys

import dramatiq

from redswitch.config import Settings

#: Ids a log call may pass as ``extra={...}``: written as fields of their own in JSON lines (the text format keeps
#: them in the message).
ID_FIELDS = ("dial_id", "node", "listener", "by", "verb")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({name: getattr(record, name) for name in ID_FIELDS if hasattr(record, name)})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(settings: Settings, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else settings.log_level.upper())
    # APScheduler logs every run of every job at INFO (the scheduler's lease job runs every few seconds): its
    # warnings and errors are kept, its chatter only with --verbose.
    logging.getLogger("apscheduler").setLevel(logging.NOTSET if verbose else logging.WARNING)


def adopt_in_worker(settings: Settings) -> None:
    """``LOG_FORMAT`` and ``LOG_LEVEL`` in a Dramatiq worker process, whose CLI has already set up logging.

    Its handlers are kept: they write to the pipe through which Dramatiq's main process serialises every worker
    process's lines onto stderr (or ``--log-file``). Only their format changes (``json``; the text format stays
    Dramatiq's, which names the process and thread), and the level when ``LOG_LEVEL`` is set (else Dramatiq's
    ``-v`` decides).
    """
    root = logging.getLogger()
    if settings.log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
    if "LOG_LEVEL" in os.environ:
        root.setLevel(settings.log_level.upper())


class WorkerLogging(dramatiq.Middleware):
    """:func:`adopt_in_worker` in each worker process as soon as the actors are loaded (not in a service that
    only imports them to send messages: Dramatiq's CLI alone emits ``process_boot``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        adopt_in_worker(self.settings)

"""``redswitch``: one command, one subcommand per process or tool.

    redswitch simulate   the ESL simulator (a stand-in FreeSWITCH)
    redswitch bridge     legacy jobs list -> Dramatiq
    redswitch listen     FreeSWITCH events -> Redis pub/sub and state
    redswitch run        bridge + listener + worker (+ simulator) together, for a laptop or a demo
    redswitch demo       a sample call through the whole pipeline, printing its events
    redswitch push       push a test job the legacy way
    redswitch watch      print a call's events as they come (or from its first, or from a stream id)
    redswitch events     follow every call's events (the firehose), alone or in a consumer group
    redswitch send       send a control message to a call and wait for its ack or error
    redswitch check      health check of Redis and FreeSWITCH
    redswitch dashboard  the live operations page (optional extra: ``pip install redswitch[dashboard]``)

The worker itself is Dramatiq's: ``dramatiq redswitch.actors``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from redswitch import __version__
from redswitch.cli import commands as commands_cli
from redswitch.config import Settings
from redswitch.errors import ConfigError
from redswitch.logs import configure_logging

RET_OK = 0
RET_FAILED = 1
RET_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redswitch", description="Call-control agent for FreeSWITCH.")
    parser.add_argument("--version", action="version", version=f"redswitch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in commands_cli.REGISTRY:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"redswitch: configuration error: {exc}", file=sys.stderr)
        return RET_USAGE
    configure_logging(settings, verbose=args.verbose)
    try:
        return int(args.handler(args, settings))
    except KeyboardInterrupt:
        return RET_OK
    except ConfigError as exc:
        logging.getLogger("redswitch").error("configuration error: %s", exc)
        return RET_USAGE

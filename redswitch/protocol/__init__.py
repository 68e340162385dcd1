"""Pure (sans-I/O) FreeSWITCH Event Socket codec: value types, incremental parser, encoders, url-encoding.

Typical client use::

    parser = Parser(Mode.FRAMES)
    for frame in parser.feed(sock.recv(65536)):
        if frame.content_type == "text/event-plain":
            event = parse_event_plain(frame.raw_body)
            if event.name == "BACKGROUND_JOB":
                result = event.body  # e.g. "+OK <uuid>\\n" or "-ERR USER_BUSY\\n"
"""

from __future__ import annotations

from redswitch.protocol.causes import CAUSES, cause_code, cause_name, reported_cause
from redswitch.protocol.codec import (
    DISCONNECT_GOODBYE,
    MAX_CONTENT_LENGTH,
    Mode,
    Parser,
    ProtocolError,
    encode_api_response,
    encode_auth_request,
    encode_command,
    encode_disconnect_notice,
    encode_event_json,
    encode_event_plain,
    encode_event_xml,
    encode_reply,
    encode_rude_rejection,
    parse_event_json,
    parse_event_plain,
    serialize_event_json,
    serialize_event_plain,
    serialize_event_xml,
)
from redswitch.protocol.event_names import EVENT_NAMES
from redswitch.protocol.frames import Event, Frame, HeaderPairs
from redswitch.protocol.urlcode import URL_UNSAFE, url_decode, url_encode

__all__ = [
    "CAUSES",
    "DISCONNECT_GOODBYE",
    "EVENT_NAMES",
    "MAX_CONTENT_LENGTH",
    "URL_UNSAFE",
    "Event",
    "Frame",
    "HeaderPairs",
    "Mode",
    "Parser",
    "ProtocolError",
    "cause_code",
    "cause_name",
    "reported_cause",
    "encode_api_response",
    "encode_auth_request",
    "encode_command",
    "encode_disconnect_notice",
    "encode_event_json",
    "encode_event_plain",
    "encode_event_xml",
    "encode_reply",
    "encode_rude_rejection",
    "parse_event_json",
    "parse_event_plain",
    "serialize_event_json",
    "serialize_event_plain",
    "serialize_event_xml",
    "url_decode",
    "url_encode",
]

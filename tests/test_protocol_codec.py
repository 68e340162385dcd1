"""The pure codec: parser (any split), encoders, url-encoding, plain/json event round-trips."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from redswitch.protocol import (
    Event,
    Mode,
    Parser,
    encode_api_response,
    encode_command,
    encode_disconnect_notice,
    encode_event_plain,
    encode_reply,
    parse_event_json,
    parse_event_plain,
    serialize_event_json,
    url_decode,
    url_encode,
)
from redswitch.protocol.codec import plain_body_section, serialize_event_plain, serialize_headers_plain
from redswitch.protocol.urlcode import url_decode_many, url_encode_many
from tests.esl_raw import TRANSCRIPTS, transcript_blocks, transcript_frames

JOB = Event.make(
    [("Event-Name", "BACKGROUND_JOB"), ("Job-UUID", "j1"), ("Job-Command-Arg", "{a=b,c=d}x &park()")], "+OK u\n"
)


def test_url_encoding_matches_freeswitch() -> None:
    assert url_encode("fd00::2") == "fd00%3A%3A2"
    assert url_encode("Fri, 27 Nov 2026 04:47:02 GMT") == "Fri,%2027%20Nov%202026%2004%3A47%3A02%20GMT"
    assert url_encode("{a=b,c}x &park()") == "%7Ba%3Db,c%7Dx%20%26park()"
    assert url_encode("already %41 encoded %zz") == "already%20%41%20encoded%20%25zz"
    assert url_encode("é") == "%C3%A9"
    assert url_decode("%7Ba%3Db%7D+x") == "{a=b}+x"


@given(st.text().filter(lambda s: not re.search(r"%[0-9A-Fa-f]{2}", s)))
def test_url_round_trip(text: str) -> None:
    encoded = url_encode(text)
    assert all(0x20 < ord(c) < 0x7F for c in encoded)
    assert url_decode(encoded) == text


_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True).filter(lambda n: n.lower() != "content-length")
_values = st.text(min_size=1).filter(lambda s: not re.search(r"%[0-9A-Fa-f]{2}", s) and s != "_undef_")


@given(st.lists(st.tuples(_names, _values), max_size=8), st.text())
def test_plain_and_json_event_round_trip(headers: list[tuple[str, str]], body: str) -> None:
    event = Event.make(headers, body)
    frames = Parser(Mode.FRAMES).feed(encode_event_plain(event))
    assert len(frames) == 1
    assert parse_event_plain(frames[0].raw_body) == event
    assert parse_event_json(serialize_event_json(event)).body == body


def test_background_job_plain_layout() -> None:
    data = encode_event_plain(JOB)
    payload = (
        b"Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nJob-Command-Arg: %7Ba%3Db,c%3Dd%7Dx%20%26park()\n"
        b"Content-Length: 6\n\n+OK u\n"
    )
    assert data == b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(payload) + payload
    assert serialize_event_json(JOB).endswith(b'"Content-Length":"6","_body":"+OK u\\n"}')


def test_encoders() -> None:
    assert encode_reply("+OK accepted") == b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    assert encode_api_response("true") == b"Content-Type: api/response\nContent-Length: 4\n\ntrue"
    assert encode_disconnect_notice().endswith(
        b"Content-Length: 67\n\nDisconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    )
    assert encode_command("bgapi status", [("Job-UUID", "x")]) == b"bgapi status\nJob-UUID: x\n\n"
    assert encode_command("sendevent CUSTOM", body="hi") == b"sendevent CUSTOM\nContent-Length: 2\n\nhi"


def test_parser_one_byte_at_a_time_on_a_recorded_session() -> None:
    stream = b"".join(b for d, b in transcript_blocks("06c_bgapi_job_uuid_header.txt") if d == "<<<")
    whole = Parser(Mode.FRAMES).feed(stream)
    parser = Parser(Mode.FRAMES)
    pieces = [f for i in range(len(stream)) for f in parser.feed(stream[i : i + 1])]
    assert pieces == whole and len(whole) > 20
    job = next(parse_event_plain(f.raw_body) for f in whole if b"BACKGROUND_JOB" in f.raw_body)
    assert job.body.startswith("+OK ") and job.get("job-uuid") == "77b9c502-c66e-4925-874f-138eb0f0f75c"


def test_command_parser_with_crlf_headers_and_body() -> None:
    parser = Parser(Mode.COMMANDS)
    data = b"\r\nauth ClueCon\r\n\r\nbgapi status\nJob-UUID: abc\n\nsendevent CUSTOM\ncontent-length: 3\n\nxyz"
    frames = [f for b in data for f in parser.feed(bytes([b]))]
    assert [f.command for f in frames] == ["auth ClueCon", "bgapi status", "sendevent CUSTOM"]
    assert frames[1].get("job-uuid") == "abc"
    assert frames[2].body == "xyz"


def test_repeated_headers_kept() -> None:
    event = parse_event_plain(b"Event-Name: X\nHangup-Cause: A\nHangup-Cause: B\n\n")
    assert event.get_all("hangup-cause") == ["A", "B"] and event.get("HANGUP-CAUSE") == "A"


# Values mixing every kind of character the fast paths treat differently: safe, printable unsafe, controls, NUL
# (the joined-text separator), non-ASCII, existing escapes (kept), a lone or a double-encoding ``%``.
_tricky = st.lists(
    st.sampled_from(
        ["a", "Z", "0", " ", ":", "=", "@", "{", "}", "%", "%41", "%3a", "%25", "%0A", "\n", "\x00", "é", "€"]
    )
    | st.text(max_size=3),
    max_size=6,
).map("".join)


@given(st.lists(_tricky, max_size=8))
def test_url_encode_many_equals_one_by_one(values: list[str]) -> None:
    assert url_encode_many(values) == [url_encode(v) for v in values]


@given(st.lists(_tricky, max_size=8))
def test_url_decode_many_equals_one_by_one(values: list[str]) -> None:
    encoded = [url_encode(v) for v in values]
    assert url_decode_many(encoded) == [url_decode(v) for v in encoded]
    assert url_decode_many(values) == [url_decode(v) for v in values]


def test_url_encode_keeps_escapes_and_encodes_a_lone_percent() -> None:
    assert url_encode_many(["%2541", "100%", "a%4", "\x00:"]) == ["%2541", "100%25", "a%254", "%00%3A"]
    assert url_decode_many(["%2541", "a%3Ab%20c", "%C3%A9%3D"]) == ["%41", "a:b c", "é="]


def test_serialize_headers_plain_is_the_plain_payload_without_its_end() -> None:
    headers = (("A", "x y"), ("Empty", ""), ("B", "{k=v}"))
    assert serialize_headers_plain(headers) == b"A: x%20y\nEmpty: _undef_\nB: %7Bk%3Dv%7D\n"
    event = Event(headers, "body\n")
    assert serialize_event_plain(event) == serialize_headers_plain(headers) + plain_body_section("body\n")
    assert plain_body_section("") == b"\n" and plain_body_section("é") == b"Content-Length: 2\n\n\xc3\xa9"


def test_every_recorded_plain_event_round_trips_byte_for_byte() -> None:
    # Given every plain event FreeSWITCH sent in the recorded sessions
    frames = [
        f
        for path in sorted(TRANSCRIPTS.glob("*.txt"))
        if not path.name.endswith(".summary.txt")
        for f in transcript_frames(path.name)
        if f.content_type == "text/event-plain"
    ]
    assert len(frames) > 200
    for frame in frames:
        # When it is parsed and encoded again
        event = parse_event_plain(frame.raw_body)
        # Then the bytes are FreeSWITCH's, and the parse agrees with a line-by-line reference decode
        assert encode_event_plain(event) == b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (
            len(frame.raw_body),
            frame.raw_body,
        )
        head = frame.raw_body.split(b"\n\n", 1)[0].decode()
        reference = [line.partition(": ") for line in head.split("\n") if not line.startswith("Content-Length")]
        assert event.headers == tuple((n, url_decode(v)) for n, _, v in reference)


def test_parse_event_plain_general_path_crlf_and_loose_spacing() -> None:
    event = parse_event_plain(
        b"Event-Name: X\r\nA:no-space\r\nB:   three%20spaces\r\nlonely\r\ncontent-length: 2\n\nhi!"
    )
    assert event.headers == (("Event-Name", "X"), ("A", "no-space"), ("B", "three spaces"), ("lonely", ""))
    assert event.body == "hi"

"""Signed control messages (redswitch/auth.py): the signature, its window, and what it covers."""

from __future__ import annotations

import json

import pytest

from redswitch import auth
from redswitch.config import Settings
from redswitch.errors import ConfigError, PayloadError
from redswitch.messages import parse_control

SECRET = "s3cret"


def test_a_signed_message_checks_and_its_signature_is_the_documented_hmac() -> None:
    message = {"type": "hold", "side": "1", "by": "supervisor-7", "nonce": "n1"}
    signed = auth.sign(message, SECRET, now=1_800_000_000)
    assert signed["ts"] == 1_800_000_000
    canonical = b'{"by":"supervisor-7","nonce":"n1","side":"1","ts":1800000000,"type":"hold"}'
    assert auth.canonical({k: v for k, v in signed.items() if k != "sig"}) == canonical
    import hashlib
    import hmac

    assert signed["sig"] == hmac.new(SECRET.encode(), canonical, hashlib.sha256).hexdigest()
    auth.check(parse_control(json.dumps(signed)), SECRET, 60, now=1_800_000_030)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"side": "0"}, "bad signature"),  # a field the signature covers, changed
        ({"by": "someone-else"}, "bad signature"),
        ({"ts": 1_800_000_001}, "bad signature"),
        ({"nonce": "other"}, "bad signature"),
        ({"sig": "0" * 64}, "bad signature"),
    ],
)
def test_a_tampered_message_is_refused(change: dict[str, object], why: str) -> None:
    signed = {**auth.sign({"type": "hold", "side": "1", "by": "sup"}, SECRET, now=1_800_000_000), **change}
    with pytest.raises(auth.Unauthorized, match=why):
        auth.check(parse_control(json.dumps(signed)), SECRET, 60, now=1_800_000_000)


def test_unsigned_wrong_secret_and_stale_messages_are_refused() -> None:
    with pytest.raises(auth.Unauthorized, match="unsigned"):
        auth.check(parse_control('{"type": "hangup"}'), SECRET, 60, now=1_800_000_000)
    signed = auth.sign({"type": "hangup"}, "other", now=1_800_000_000)
    with pytest.raises(auth.Unauthorized, match="bad signature"):
        auth.check(parse_control(json.dumps(signed)), SECRET, 60, now=1_800_000_000)
    signed = auth.sign({"type": "hangup"}, SECRET, now=1_800_000_000)
    for now in (1_800_000_061, 1_799_999_939):  # too old, and too far in the future
        with pytest.raises(auth.Unauthorized, match="stale"):
            auth.check(parse_control(json.dumps(signed)), SECRET, 60, now=now)


def test_two_identical_messages_signed_in_the_same_second_differ() -> None:
    one, two = (auth.sign({"type": "hangup"}, SECRET, now=1_800_000_000) for _ in range(2))
    assert one["nonce"] != two["nonce"] and one["sig"] != two["sig"]


def test_fields_redswitch_ignores_are_not_signed_and_cannot_be_smuggled() -> None:
    signed = auth.sign({"type": "send-dtmf", "side": "0", "digits": "12", "note": "x"}, SECRET, now=1_800_000_000)
    assert "note" not in signed
    auth.check(parse_control(json.dumps({**signed, "note": "anything"})), SECRET, 60, now=1_800_000_000)


def test_signature_fields_are_validated_like_any_other() -> None:
    for bad in ({"ts": "1800000000"}, {"ts": True}, {"sig": "ABC"}, {"by": "a b"}, {"by": "x\ny"}):
        with pytest.raises(PayloadError):
            parse_control(json.dumps({"type": "hangup", **bad}))
    with pytest.raises(PayloadError):
        auth.sign({"type": "send-dtmf", "side": "0", "digits": "1\n\napi hupall"}, SECRET)


def test_signed_verbs_setting() -> None:
    assert Settings().signed_verbs() == frozenset()
    assert "hangup" in Settings(control_secret="x").signed_verbs()
    only = Settings.from_env({"CONTROL_SECRET": "x", "CONTROL_SIGNED_VERBS": "barge, hold"})
    assert only.signed_verbs() == {"barge", "hold"}
    with pytest.raises(ConfigError, match="CONTROL_SIGNED_VERBS"):
        Settings.from_env({"CONTROL_SECRET": "x", "CONTROL_SIGNED_VERBS": "barge,explode"})


def test_a_transfers_signature_covers_its_number_caller_id_and_side() -> None:
    message = {"type": "transfer", "side": "1", "phone_number": "1-510-555-0123", "caller_id": "14155550100"}
    signed = auth.sign(message, SECRET, now=1_800_000_000)
    control = parse_control(json.dumps(signed))
    assert control.signed_fields()["phone_number"] == "15105550123"  # signed as normalised
    auth.check(control, SECRET, 60, now=1_800_000_000)
    for change in ({"phone_number": "15105550999"}, {"caller_id": "14155550999"}, {"side": "0"}):
        with pytest.raises(auth.Unauthorized):
            auth.check(parse_control(json.dumps({**signed, **change})), SECRET, 60, now=1_800_000_000)
    # without caller_id (it defaults to the side's own), the signature covers what is there
    bare = auth.sign({"type": "transfer", "side": "0", "phone_number": "15105550123"}, SECRET, now=1_800_000_000)
    auth.check(parse_control(json.dumps(bare)), SECRET, 60, now=1_800_000_000)
    with pytest.raises(auth.Unauthorized):
        auth.check(parse_control(json.dumps({**bare, "caller_id": "14155550999"})), SECRET, 60, now=1_800_000_000)

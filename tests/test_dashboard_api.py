"""The dashboard's HTTP side over a real redis-server and a real uvicorn: auth, controls, timeline, event stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redswitch import auth
from redswitch.cli import main
from redswitch.config import Settings
from redswitch.dashboard.security import COOKIE, session_value
from redswitch.messages import parse_control
from redswitch.store.keys import Keys
from tests.dashboard import EventStream, Served
from tests.servers import RedisServer

TOKEN = "s3cret-token-for-tests"
SECRET = "control-secret-for-tests"


@pytest.fixture
def served(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[Served]:
    running = Served(Settings(pubsub_redis_url=redis_server.url, dashboard_token=TOKEN)).start()
    yield running
    running.stop()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def login(served: Served, name: str = "alice", token: str = TOKEN) -> tuple[int, dict[str, str]]:
    form = f"name={name}&token={token}"
    headers = {"content-type": "application/x-www-form-urlencoded", "origin": served.origin}
    status, found, _ = served.request("POST", "/login", form, headers)
    return status, found


def cookie(served: Served, name: str = "alice") -> dict[str, str]:
    status, found = login(served, name)
    assert status == 303, found
    return {"cookie": found["set-cookie"].split(";", 1)[0]}


def publishes(client: redis.Redis, channel: str, action: Any, timeout: float = 2.0) -> list[str]:
    """What is published on ``channel`` while ``action()`` runs (and shortly after)."""
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=1)
    action()
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            seen.append(str(message["data"]))
            deadline = min(deadline, time.monotonic() + 0.2)
    pubsub.close()
    return seen


PROTECTED = ["/api/state", "/api/calls/d1", "/static/app.js", "/static/app.css"]


@pytest.mark.parametrize("path", PROTECTED)
def test_without_the_token_every_api_and_asset_is_refused(served: Served, path: str) -> None:
    assert served.request("GET", path)[0] == 401
    assert served.request("GET", path, headers=bearer("wrong"))[0] == 401
    assert served.request("GET", path, headers={"cookie": f"{COOKIE}=alice.{'0' * 64}"})[0] == 401
    assert served.request("GET", path, headers=bearer())[0] == 200


def test_the_page_sends_a_stranger_to_the_login_form(served: Served) -> None:
    status, found, _ = served.request("GET", "/")
    assert status == 303 and found["location"] == "/login"
    status, _, body = served.request("GET", "/login")
    assert status == 200 and b'action="/login"' in body
    assert EventStream(served).status == 401


def test_login_with_the_token_sets_a_strict_httponly_cookie_naming_the_user(served: Served) -> None:
    assert login(served, token="nope")[0] == 401
    status, found = login(served, name="alice")
    assert status == 303 and found["location"] == "/"
    attributes = [part.strip().lower() for part in found["set-cookie"].split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    assert found["set-cookie"].startswith(f"{COOKIE}={session_value(TOKEN, 'alice')}")
    assert TOKEN not in found["set-cookie"]
    session = cookie(served)
    status, _, body = served.request("GET", "/", headers=session)
    assert status == 200 and b"/static/app.js" in body
    # the name is signed: changing it in the cookie refuses the cookie
    forged = {"cookie": session["cookie"].replace("=alice.", "=mallory.")}
    assert served.request("GET", "/api/state", headers=forged)[0] == 401


def test_a_login_post_from_another_origin_is_refused(served: Served) -> None:
    headers = {"content-type": "application/x-www-form-urlencoded", "origin": "http://evil.example"}
    assert served.request("POST", "/login", f"name=a&token={TOKEN}", headers)[0] == 403


def test_every_answer_carries_a_strict_content_security_policy(served: Served) -> None:
    for path, headers in [("/", bearer()), ("/api/state", bearer()), ("/login", {}), ("/api/state", {})]:
        _, found, _ = served.request("GET", path, headers=headers)
        assert "default-src 'self'" in found["content-security-policy"], path
        assert (
            "script-src 'self'" in found["content-security-policy"]
            and "unsafe-inline" not in found["content-security-policy"]
        )
        assert found["x-content-type-options"] == "nosniff"


def test_a_control_from_the_page_is_validated_published_with_its_sender_and_logged(
    served: Served, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    session = {**cookie(served, "alice"), "origin": served.origin}
    barge = {"type": "barge", "phone_number": "1510-555-0177", "caller_id": "777-777-7777", "extra": "x"}
    answers: list[tuple[int, Any]] = []
    with caplog.at_level("INFO", logger="redswitch.dashboard.app"):
        seen = publishes(
            redis_client, "d1", lambda: answers.append(served.json("POST", "/api/calls/d1/control", barge, session))
        )
    assert answers[0][0] == 202
    assert [json.loads(s) for s in seen] == [
        {"type": "barge", "phone_number": "15105550177", "caller_id": "7777777777", "by": "dashboard.alice"}
    ]
    record = next(r for r in caplog.records if "sent from the dashboard" in r.getMessage())
    assert (getattr(record, "dial_id"), getattr(record, "by"), getattr(record, "verb")) == (  # noqa: B009
        "d1",
        "dashboard.alice",
        "barge",
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"type": "barge", "phone_number": "1510 555", "caller_id": "1"}, "phone_number"),
        ({"type": "barge", "phone_number": "15105550177&eavesdrop(x)"}, "phone_number"),
        ({"type": "send-dtmf", "side": "1", "digits": "1"}, "type must be one of"),
        ({"type": "hangup", "by": "someone-else"}, None),
        ("not json", "JSON"),
        (json.dumps({"type": "hangup", "padding": "x" * 1_000_000}), "too long"),
    ],
)
def test_a_bad_control_is_refused_and_nothing_is_published(
    served: Served, redis_client: redis.Redis, body: Any, reason: str | None
) -> None:
    headers = {**bearer(), "content-type": "application/json"}
    raw = body if isinstance(body, str) else json.dumps(body)
    answers: list[Any] = []
    seen = publishes(
        redis_client, "d1", lambda: answers.append(served.request("POST", "/api/calls/d1/control", raw, headers)), 0.5
    )
    status, _, answer = answers[0]
    if reason is None:  # the sender is the dashboard's, whatever the body says
        assert status == 202 and json.loads(seen[0])["by"] == "dashboard.token"
        return
    assert status == 400 and reason in json.loads(answer)["error"]
    assert seen == []


def test_controls_need_the_token_and_the_page_s_own_origin(served: Served, redis_client: redis.Redis) -> None:
    session = cookie(served)
    hangup = {"type": "hangup"}
    cases = [
        ({}, 401),
        ({"origin": served.origin}, 401),
        ({**bearer("wrong"), "origin": served.origin}, 401),
        (session, 403),  # a browser always sends Origin on a POST: none means not from the page
        ({**session, "origin": "http://evil.example"}, 403),
        ({**bearer(), "origin": "http://evil.example"}, 403),
    ]
    for headers, status in cases:
        got: list[Any] = []
        assert (
            publishes(
                redis_client,
                "d1",
                lambda h=headers, g=got: g.append(served.json("POST", "/api/calls/d1/control", hangup, h)),
                0.3,
            )
            == []
        )
        assert got[0][0] == status, headers
    assert served.json("POST", "/api/calls/d1/control", hangup, {**session, "origin": served.origin})[0] == 202
    assert served.json("POST", "/api/calls/d1/control", hangup, bearer())[0] == 202


@pytest.mark.parametrize("dial_id", ["a%3Cimg%20src%3Dx%3E", "a.b", "x" * 65, "%0Aapi%20hupall"])
def test_a_dial_id_that_is_not_an_id_is_refused(served: Served, redis_client: redis.Redis, dial_id: str) -> None:
    assert served.request("GET", f"/api/calls/{dial_id}", headers=bearer())[0] == 400
    assert served.json("POST", f"/api/calls/{dial_id}/control", {"type": "hangup"}, bearer())[0] == 400


def test_controls_are_signed_when_control_secret_is_set(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    settings = Settings(pubsub_redis_url=redis_server.url, dashboard_token=TOKEN, control_secret=SECRET)
    served = Served(settings).start()
    try:
        answers: list[Any] = []
        seen = publishes(
            redis_client,
            "d9",
            lambda: answers.append(served.json("POST", "/api/calls/d9/control", {"type": "whisper"}, bearer())),
        )
    finally:
        served.stop()
    assert answers[0][0] == 202 and answers[0][1]["signed"] is True
    message = parse_control(seen[0])
    assert message.by == "dashboard.token"
    auth.check(message, SECRET, 60)  # raises unless signed with the secret, now
    with pytest.raises(auth.Unauthorized):
        auth.check(message, "another secret", 60)


def test_the_timeline_is_the_call_s_stream_in_order_with_its_record_and_history(
    served: Served, redis_client: redis.Redis
) -> None:
    events = [
        {"type": "call-start", "dial_id": "t1"},
        {"type": "answer-event", "side": "0"},
        {"type": "ack", "event": "x"},
    ]
    for event in events:
        redis_client.xadd(Keys.events("t1"), {"event": json.dumps(event)})
    redis_client.hset(Keys.call("t1"), mapping={"org_id": "o1", "user_id": "u1", "node": "n1", "job": "{...}"})
    redis_client.lpush(Keys.history("o1", "u1"), json.dumps(events[0]), json.dumps(events[1]))
    status, timeline = served.json("GET", "/api/calls/t1", headers=bearer())
    assert status == 200
    assert [entry["event"] for entry in timeline["events"]] == events
    assert timeline["record"] == {"org_id": "o1", "user_id": "u1", "node": "n1"}
    assert timeline["history"] == [events[1], events[0]]


def test_the_event_stream_starts_with_a_snapshot_then_pushes_deltas(served: Served, redis_client: redis.Redis) -> None:
    stream = EventStream(served, bearer())
    try:
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        kind, snapshot = stream.next()
        assert kind == "snapshot" and snapshot["calls"] == []
        hostile = '<img src=x onerror="alert(1)">'
        for dial_id, event in [
            ("s1", {"type": "call-start", "dial_id": "s1"}),
            ("s1", {"type": "answer-event", "side": "0"}),
            (hostile, {"type": "call-start", "dial_id": hostile}),
        ]:
            redis_client.xadd(Keys.firehose(), {"dial_id": dial_id, "event": json.dumps(event)})
        calls: dict[str, Any] = {}

        def both(events: list[tuple[str, Any]]) -> bool:
            for _kind, data in events:
                calls.update({c["dial_id"]: c for c in data.get("calls", [])})
            return calls.get("s1", {}).get("status") == "live" and hostile in calls

        stream.until(both)
        assert calls["s1"]["sides"]["0"]["state"] == "answered"
    finally:
        stream.close()


def test_the_snapshot_holds_the_calls_active_before_the_dashboard_started(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    redis_client.sadd(Keys.active_calls(), "old1")
    for event in [{"type": "call-start", "dial_id": "old1"}, {"type": "answer-event", "side": "0"}]:
        redis_client.xadd(Keys.events("old1"), {"event": json.dumps(event)})
    redis_client.hset(Keys.call("old1"), mapping={"org_id": "o", "user_id": "u", "call_provider": "gw", "node": "n"})
    served = Served(Settings(pubsub_redis_url=redis_server.url, dashboard_token=TOKEN)).start()
    try:
        status, state = served.json("GET", "/api/state", headers=bearer())
    finally:
        served.stop()
    assert status == 200
    (call,) = state["calls"]
    assert (call["dial_id"], call["status"], call["org_id"], call["gateway"], call["node"]) == (
        "old1",
        "live",
        "o",
        "gw",
        "n",
    )


def test_without_a_token_only_loopback_hosts_are_served(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    served = Served(Settings(pubsub_redis_url=redis_server.url), no_auth=True).start()
    try:
        assert served.request("GET", "/api/state")[0] == 200
        # a name of an attacker's pointed at 127.0.0.1 (DNS rebinding) is not this dashboard
        assert served.request("GET", "/api/state", headers={"host": "evil.example:8080"})[0] == 401
        assert (
            served.json("POST", "/api/calls/d1/control", {"type": "hangup"}, {"origin": "http://evil.example"})[0]
            == 403
        )
    finally:
        served.stop()


def test_the_command_refuses_to_serve_without_a_token_unless_no_auth_on_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DASHBOARD_TOKEN", raising=False)
    assert main(["dashboard", "--port", "1"]) == 2
    assert "DASHBOARD_TOKEN" in capsys.readouterr().err
    for host in ("0.0.0.0", "10.1.2.3", "example.com", "::"):
        assert main(["dashboard", "--no-auth", "--host", host, "--port", "1"]) == 2
        assert "loopback" in capsys.readouterr().err
    monkeypatch.setenv("DASHBOARD_TOKEN", "t")
    assert main(["dashboard", "--no-auth", "--host", "0.0.0.0", "--port", "1"]) == 2


def test_a_feed_that_stops_is_told_to_every_page(
    served: Served, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = EventStream(served, bearer())
    try:
        assert stream.next()[0] == "snapshot"

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bug in folding")

        monkeypatch.setattr(served.dashboard.view, "apply", broken)
        redis_client.xadd(Keys.firehose(), {"dial_id": "x1", "event": json.dumps({"type": "call-start"})})
        events = stream.until(lambda seen: any(kind == "feed-error" for kind, _ in seen))
        assert "a bug in folding" in events[-1][1]["reason"]
    finally:
        stream.close()
    assert "a bug in folding" in served.json("GET", "/api/state", headers=bearer())[1]["feed_error"]


def test_a_burst_of_events_reaches_a_page_in_a_few_coalesced_deltas(served: Served, redis_client: redis.Redis) -> None:
    stream = EventStream(served, bearer())
    try:
        assert stream.next()[0] == "snapshot"
        pipe = redis_client.pipeline()
        for n in range(300):
            event = {"type": "call-start", "dial_id": f"c{n}"}
            pipe.xadd(Keys.firehose(), {"dial_id": f"c{n}", "event": json.dumps(event)})
        pipe.execute()
        seen: set[str] = set()

        def all_seen(events: list[tuple[str, Any]]) -> bool:
            seen.update(call["dial_id"] for _, data in events[-1:] for call in data.get("calls", []))
            return len(seen) == 300

        deltas = stream.until(all_seen)
    finally:
        stream.close()
    assert len(deltas) <= 3, [len(data.get("calls", [])) for _, data in deltas]

"""Who may use the dashboard (redswitch/dashboard/security.py), without a server."""

from __future__ import annotations

import pytest

from redswitch.dashboard.security import COOKIE, NO_AUTH_NAME, TOKEN_NAME, Access, is_loopback, may_serve, session_value


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("localhost.evil.example", False),
        ("", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_when_the_dashboard_may_start() -> None:
    assert may_serve("a" * 16, "0.0.0.0", no_auth=False) == ""
    assert "at least 16" in may_serve("a" * 15, "0.0.0.0", no_auth=False)  # too short to stand a guessing login
    assert may_serve("", "127.0.0.1", no_auth=True) == ""
    assert may_serve("", "localhost", no_auth=True) == ""
    assert "DASHBOARD_TOKEN" in may_serve("", "127.0.0.1", no_auth=False)
    assert "loopback" in may_serve("", "0.0.0.0", no_auth=True)
    assert "loopback" in may_serve("t", "10.0.0.1", no_auth=True)


def test_who_a_request_comes_from() -> None:
    access = Access("token-1")
    assert access.who({}, {}) is None
    assert access.who({"authorization": "Bearer token-1"}, {}) == TOKEN_NAME
    assert access.who({"authorization": "bearer token-1"}, {}) == TOKEN_NAME
    assert access.who({"authorization": "Bearer token-2"}, {}) is None
    assert access.who({"authorization": "Basic token-1"}, {}) is None
    assert access.who({}, {COOKIE: session_value("token-1", "alice")}) == "alice"
    assert access.who({}, {COOKIE: session_value("token-2", "alice")}) is None  # the token changed
    assert access.who({}, {COOKIE: "token-1"}) is None
    assert access.who({}, {COOKIE: session_value("token-1", "a b")}) is None  # not a name `by` allows
    no_auth = Access("")
    assert no_auth.who({"host": "127.0.0.1:8080"}, {}) == NO_AUTH_NAME
    assert no_auth.who({"host": "[::1]:8080"}, {}) == NO_AUTH_NAME
    assert no_auth.who({"host": "rebound.evil.example:8080"}, {}) is None


def test_a_post_must_come_from_the_page_s_own_origin() -> None:
    ours = {"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080"}
    assert Access.same_origin(ours, "http", bearer=False)
    assert not Access.same_origin(ours, "https", bearer=False)
    assert not Access.same_origin({**ours, "origin": "null"}, "http", bearer=False)
    assert not Access.same_origin({**ours, "origin": "http://evil.example"}, "http", bearer=True)
    assert not Access.same_origin({"host": "127.0.0.1:8080"}, "http", bearer=False)
    assert Access.same_origin({"host": "127.0.0.1:8080"}, "http", bearer=True)

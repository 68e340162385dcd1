"""Who may use the dashboard, and the headers every answer carries (pure: no web framework here).

With ``DASHBOARD_TOKEN`` set, every request must carry the token, as ``Authorization: Bearer <token>`` (scripts),
or the session cookie a person gets from the login form: ``<name>.<HMAC-SHA256 of the name keyed with the token>``
(HttpOnly, SameSite=Strict), so the cookie names who logged in, cannot be forged without the token, and stops
working when the token changes. Every comparison is :func:`hmac.compare_digest`. A request that changes something
(POST) must also come from the page itself: its ``Origin`` (browsers always send it on a POST) must be the
dashboard's own; a script with the bearer token may send none.

Without a token (``--no-auth``, loopback only) the ``Host`` must be a loopback name too: otherwise a web page could
point a name of its own at 127.0.0.1 (DNS rebinding) and use the dashboard as its own origin.

Who sent a control (``by``, logged by the dashboard and the worker) is ``dashboard.<name>``: ``by`` allows letters,
digits and ``_ . @ + -`` (``messages.SENDER_PATTERN``), so no colon.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping

COOKIE = "redswitch_dashboard"
#: A name given at login: what ``by`` allows, short enough for ``dashboard.`` before it.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.@+\-]{1,48}")
#: The name of whoever uses the bearer token, or the page without a token.
TOKEN_NAME = "token"
NO_AUTH_NAME = "local"

#: Headers on every answer: no script but the dashboard's own files, no framing, no sniffing, no referrer elsewhere.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # not no-referrer: with it a browser sends `Origin: null` on a form POST, and the login could not be told from a
    # cross-site one
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: The shortest DASHBOARD_TOKEN accepted: the token is the only thing between a network and the calls' controls,
#: and a login form can be tried at will (``openssl rand -hex 24`` makes 48 characters).
TOKEN_MIN = 16


def may_serve(token: str, host: str, no_auth: bool) -> str:
    """Why the dashboard may not start with these options ('' when it may)."""
    if no_auth and not is_loopback(host):
        return f"--no-auth serves the page to anyone who can reach it: only on a loopback address, not {host}"
    if not token and not no_auth:
        return "set DASHBOARD_TOKEN (or, on a loopback address only, pass --no-auth)"
    if not no_auth and len(token) < TOKEN_MIN:
        return f"DASHBOARD_TOKEN is {len(token)} characters: use at least {TOKEN_MIN} (e.g. openssl rand -hex 24)"
    return ""


def session_value(token: str, name: str) -> str:
    """The cookie of a person who logged in as ``name`` with ``token``."""
    return f"{name}.{_mac(token, name)}"


def _mac(token: str, name: str) -> str:
    return hmac.new(token.encode(), f"redswitch-dashboard-session:{name}".encode(), hashlib.sha256).hexdigest()


def token_matches(token: str, given: str) -> bool:
    return bool(token) and hmac.compare_digest(token.encode(), given.encode())


@dataclasses.dataclass(frozen=True)
class Access:
    """The dashboard's access rule: ``token`` ('' with ``--no-auth``)."""

    token: str

    def who(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
        """The name of whoever sent a request with these headers and cookies, or None when it may not."""
        if not self.token:
            return NO_AUTH_NAME if is_loopback(host_name(headers.get("host", ""))) else None
        if self.bearer(headers):
            return TOKEN_NAME
        name, _, mac = cookies.get(COOKIE, "").rpartition(".")
        if NAME_PATTERN.fullmatch(name) and hmac.compare_digest(mac.encode(), _mac(self.token, name).encode()):
            return name
        return None

    def bearer(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries the token itself (``Authorization: Bearer``): a script, not a browser page."""
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token_matches(self.token, given.strip())

    @staticmethod
    def same_origin(headers: Mapping[str, str], scheme: str, bearer: bool) -> bool:
        """Whether a POST comes from the dashboard's own page: its ``Origin`` is ours (a bearer script may omit
        it; a browser never does on a POST)."""
        origin = headers.get("origin")
        if origin is None:
            return bearer
        return hmac.compare_digest(origin.encode(), f"{scheme}://{headers.get('host', '')}".encode())


def host_name(host_header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8080`` → ``::1``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else ""
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def sender(name: str) -> str:
    """The ``by`` of a control sent by ``name``."""
    return f"dashboard.{name}"

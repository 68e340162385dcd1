"""The dashboard's web side (Starlette): the page, its API, and the Server-Sent Events that keep it live.

Routes (every one but the login form needs the token: ``security.py``):

* ``GET /``: the page; ``GET /static/app.js|app.css``: its script and style (no inline script anywhere);
* ``GET /login``, ``POST /login`` (form: ``name``, ``token``: sets the session cookie), ``POST /logout``;
* ``GET /api/state``: the whole view as JSON (what a new page starts from);
* ``GET /api/events``: ``text/event-stream``: one ``snapshot`` event (the whole view), then ``delta`` events (only
  what changed: calls as whole objects, removed dial_ids, new failures and replies, the nodes and the dead list
  when they changed, the rates once a second);
* ``GET /api/calls/<dial_id>``: one call's timeline: its events in order (its stream), its record, its user's
  history;
* ``POST /api/calls/<dial_id>/control`` (JSON ``{"type": ..., "phone_number", "caller_id"}``): a control message,
  validated, signed when ``CONTROL_SECRET`` is set, published on the call's channel as any client does; its
  ``ack`` or ``error`` reaches the page through the event stream.

Why deltas every :data:`FLUSH` seconds: events come in bursts (a batch of the listener's is one script), and a
page redrawing on each would spend its time in layout; a delta of the changes since the last flush costs the
server one JSON encoding per flush for all pages, whatever the event rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redswitch import auth
from redswitch.config import Settings
from redswitch.dashboard import feed as feed_module
from redswitch.dashboard.security import COOKIE, NAME_PATTERN, SECURITY_HEADERS, Access, sender, session_value
from redswitch.dashboard.security import token_matches as matches
from redswitch.dashboard.view import View, stream_ms
from redswitch.errors import PayloadError
from redswitch.messages import ID_PATTERN
from redswitch.store.connection import redis_from_settings, reply_text
from redswitch.store.keys import Keys

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: Seconds between two pushes of the view's changes to the pages.
FLUSH = 0.2
#: Seconds between two keep-alive comments on an idle event stream (proxies close silent connections).
KEEPALIVE = 15.0
#: Pushes a page may fall behind before it is dropped (its browser reconnects and starts from a new snapshot).
BACKLOG = 200
#: Bytes a login or a control request may have.
BODY_MAX = 4096
#: The verbs the page offers.
VERBS = ("barge", "whisper", "mute", "threeway", "unthreeway", "hangup")
#: Fields of a call record the timeline shows (not ``job``: the whole job is long and adds nothing here).
RECORD_FIELDS = (
    "org_id",
    "user_id",
    "call_provider",
    "node",
    "state",
    "uuid0",
    "uuid1",
    "barger_uuid",
    "barger_mode",
    "barger_answered",
    "held0",
    "held1",
    "recording",
    "job_result",
)
_CLOSE = ""
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css"}


def now_ms() -> int:
    return int(time.time() * 1000)


def encode(kind: str, data: Any) -> str:
    """One Server-Sent Event. JSON never holds a raw line break, so no value can end the event early."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Dashboard:
    """What the routes share: the settings, the access rule, the view (under its lock), Redis, the open pages."""

    def __init__(self, settings: Settings, access: Access, client: redis.Redis | None = None) -> None:
        self.settings, self.access = settings, access
        self.client = client or redis_from_settings(settings)
        self.view = View()
        self.lock = threading.Lock()
        self.feed = feed_module.Feed(settings, self.client, self.view, self.lock)
        self.pages: set[asyncio.Queue[str]] = set()
        self.stop = threading.Event()
        #: Why the feed stopped ('' while it runs): the pages must not show stale calls as live.
        self.feed_error = ""
        self.files = {name: (STATIC / name).read_bytes() for name in ("index.html", "login.html", "app.js", "app.css")}

    def who(self, request: Request) -> str | None:
        return self.access.who(request.headers, request.cookies)

    def broadcast(self, message: str) -> None:
        for queue in list(self.pages):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # too far behind: drop it; its EventSource reconnects to a fresh snapshot
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(_CLOSE)
                self.pages.discard(queue)

    async def pump(self) -> None:
        """Every :data:`FLUSH` seconds, the view's changes to every page (the rates once a second)."""
        last_second = 0
        announced = False
        while True:
            await asyncio.sleep(FLUSH)
            if self.feed_error and not announced:
                announced = True
                self.broadcast(encode("feed-error", {"reason": self.feed_error}))
            now = now_ms()
            with self.lock:
                self.view.prune(now)
                delta = self.view.drain(now, rates=now // 1000 != last_second)
            last_second = now // 1000
            if delta is not None and self.pages:
                self.broadcast(encode("delta", delta))

    def stopped(self, exc: BaseException) -> None:
        self.feed_error = f"{type(exc).__name__}: {exc}"[:300]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        feed_module.start(self.feed, self.stop, self.stopped)
        pump = asyncio.create_task(self.pump())
        try:
            yield
        finally:
            self.stop.set()
            pump.cancel()
            self.broadcast(_CLOSE)

    # -- routes ---------------------------------------------------------------------------------------------

    def static(self, name: str) -> Response:
        return Response(self.files[name], media_type=TYPES[name.rsplit(".", 1)[1]])

    async def index(self, request: Request) -> Response:
        if self.who(request) is None:
            return RedirectResponse("/login", status_code=303)
        return self.static("index.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("app.js", "app.css"):
            return Response("not found", status_code=404, media_type="text/plain")
        if self.who(request) is None:
            return Response("unauthorized", status_code=401, media_type="text/plain")
        return self.static(name)

    async def login_page(self, request: Request) -> Response:
        return self.static("login.html")

    async def login(self, request: Request) -> Response:
        if not self.access.same_origin(request.headers, request.url.scheme, bearer=False):
            return Response("forbidden: not from this page", status_code=403, media_type="text/plain")
        form = urllib.parse.parse_qs((await _body(request)).decode(errors="replace"))
        name = (form.get("name") or [""])[0].strip() or "operator"
        token = (form.get("token") or [""])[0]
        if not self.access.token:
            return RedirectResponse("/", status_code=303)
        if not NAME_PATTERN.fullmatch(name) or not matches(self.access.token, token):
            logger.warning("dashboard: refused a login (bad token or name) from %s", _client(request))
            return Response("wrong token or name", status_code=401, media_type="text/plain")
        logger.info("dashboard: %s logged in from %s", name, _client(request))
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            session_value(self.access.token, name),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def state(self, request: Request) -> Response:
        if self.who(request) is None:
            return _unauthorized()
        with self.lock:
            return JSONResponse({**self.view.snapshot(now_ms()), "feed_error": self.feed_error})

    async def events(self, request: Request) -> Response:
        if self.who(request) is None:
            return _unauthorized()
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=BACKLOG)
        self.pages.add(queue)  # before the snapshot: nothing drained after it can be missed
        with self.lock:
            first = encode("snapshot", {**self.view.snapshot(now_ms()), "feed_error": self.feed_error})

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n" + first
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), KEEPALIVE)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if message == _CLOSE:
                        return
                    yield message
            finally:
                self.pages.discard(queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})

    def timeline(self, request: Request) -> Response:
        if self.who(request) is None:
            return _unauthorized()
        dial_id = request.path_params["dial_id"]
        if not ID_PATTERN.fullmatch(dial_id):
            return JSONResponse({"error": "a dial_id is 1 to 64 letters, digits, _ or -"}, status_code=400)
        return JSONResponse(call_timeline(self.client, dial_id))

    async def control(self, request: Request) -> Response:
        name = self.who(request)
        if name is None:
            return _unauthorized()
        if not self.access.same_origin(request.headers, request.url.scheme, bearer=self.access.bearer(request.headers)):
            logger.warning("dashboard: refused a control from another origin (%s)", _client(request))
            return JSONResponse({"error": "forbidden: not from this page"}, status_code=403)
        dial_id = request.path_params["dial_id"]
        if not ID_PATTERN.fullmatch(dial_id):
            return JSONResponse({"error": "a dial_id is 1 to 64 letters, digits, _ or -"}, status_code=400)
        body = await _body(request)
        try:
            payload = control_message(body, sender(name), self.settings.control_secret)
        except PayloadError as exc:
            return JSONResponse({"error": exc.reason}, status_code=400)
        verb = str(payload["type"])
        receivers = await run_in_threadpool(self.client.publish, Keys.channel(dial_id), json.dumps(payload))
        logger.info(
            "dial_id=%s by=%s %s sent from the dashboard",
            dial_id,
            payload["by"],
            verb,
            extra={"dial_id": dial_id, "by": payload["by"], "verb": verb},
        )
        shown = {k: v for k, v in payload.items() if k not in ("sig", "nonce")}
        return JSONResponse({"sent": shown, "signed": "sig" in payload, "receivers": receivers}, status_code=202)


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer (a plain ASGI wrapper: it leaves streaming alone)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def build_app(settings: Settings, *, no_auth: bool = False, client: redis.Redis | None = None) -> Starlette:
    """The dashboard for ``settings``: it needs ``DASHBOARD_TOKEN`` unless ``no_auth`` (the caller checks that
    ``no_auth`` is used on loopback only: ``security.may_serve``)."""
    dash = Dashboard(settings, Access("" if no_auth else settings.dashboard_token), client)
    routes = [
        Route("/", dash.index),
        Route("/static/{name}", dash.asset),
        Route("/login", dash.login_page, methods=["GET"]),
        Route("/login", dash.login, methods=["POST"]),
        Route("/logout", dash.logout, methods=["POST"]),
        Route("/api/state", dash.state),
        Route("/api/events", dash.events),
        Route("/api/calls/{dial_id}", dash.timeline),
        Route("/api/calls/{dial_id}/control", dash.control, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=dash.lifespan)
    app.add_middleware(SecurityHeaders)
    app.state.dashboard = dash
    return app


def control_message(body: bytes, by: str, secret: str) -> dict[str, Any]:
    """The message to publish for a request's JSON body: one of :data:`VERBS` with the fields it takes, ``by``
    the sender, validated as the worker will (``parse_control``), and signed when ``secret`` is set. Raises
    PayloadError with the reason to show."""
    if len(body) > BODY_MAX:
        raise PayloadError("the request is too long")
    try:
        asked = json.loads(body)
    except ValueError:
        raise PayloadError("the request must be JSON") from None
    if not isinstance(asked, dict) or asked.get("type") not in VERBS:
        raise PayloadError(f"type must be one of {', '.join(VERBS)}")
    message: dict[str, Any] = {"type": asked["type"], "by": by}
    if asked["type"] == "barge":
        phone = asked.get("phone_number")
        message.update(phone_number=phone, caller_id=asked.get("caller_id") or phone)
    return auth.outgoing(message, secret)


def call_timeline(client: redis.Redis, dial_id: str) -> dict[str, Any]:
    """A call's events in order (its stream), its record, and its user's history (the user's latest call)."""
    pipe = client.pipeline(transaction=False)
    pipe.xrange(Keys.events(dial_id), count=1000)
    pipe.hgetall(Keys.call(dial_id))
    entries, record = pipe.execute()
    record = {reply_text(k): reply_text(v) for k, v in record.items()}
    events = []
    for entry_id, fields in entries:
        text = reply_text(dict(fields).get("event", ""))
        try:
            event: Any = json.loads(text)
        except ValueError:
            event = {"text": text}
        events.append({"id": reply_text(entry_id), "at": stream_ms(reply_text(entry_id)), "event": event})
    org_id, user_id = record.get("org_id", ""), record.get("user_id", "")
    history: list[Any] = []
    if ID_PATTERN.fullmatch(org_id) and ID_PATTERN.fullmatch(user_id):
        for raw in client.lrange(Keys.history(org_id, user_id), 0, 199):
            try:
                history.append(json.loads(reply_text(raw)))
            except ValueError:
                history.append({"text": reply_text(raw)})
    return {
        "dial_id": dial_id,
        "record": {k: record[k] for k in RECORD_FIELDS if k in record},
        "events": events,
        "history": history,
    }


async def _body(request: Request) -> bytes:
    """The request's body, read no further than :data:`BODY_MAX` bytes (a longer one is cut there, and then
    refused as malformed): nothing the page sends is longer."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_MAX:
            return body[: BODY_MAX + 1]
    return body


def _unauthorized() -> Response:
    return JSONResponse({"error": "unauthorized"}, status_code=401)


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def serve(settings: Settings, host: str, port: int, no_auth: bool) -> int:
    """Serve the dashboard until interrupted (uvicorn)."""
    import uvicorn

    app = build_app(settings, no_auth=no_auth)
    logger.info("dashboard on http://%s:%d/ (%s)", host, port, "no auth: loopback only" if no_auth else "token")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    return 0

"""The dashboard served for real: uvicorn on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import uvicorn

from redswitch.config import Settings
from redswitch.dashboard.app import Dashboard, build_app
from tests.servers import free_port


class Served:
    """``build_app(settings)`` under a real uvicorn on 127.0.0.1, started, with the feed's snapshot loaded."""

    def __init__(self, settings: Settings, no_auth: bool = False) -> None:
        self.app = build_app(settings, no_auth=no_auth)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.origin = f"http://{self.host}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def dashboard(self) -> Dashboard:
        dash: Dashboard = self.app.state.dashboard
        return dash

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "uvicorn did not start"
        assert self.dashboard.feed.ready.wait(10), "the feed did not load its snapshot"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.dashboard.client.close()

    def request(
        self, method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request; the status, the headers (lower-case names; Set-Cookie lines joined by a newline), the body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            found: dict[str, str] = {}
            for name, value in answer.getheaders():
                key = name.lower()
                found[key] = f"{found[key]}\n{value}" if key in found else value
            return answer.status, found, answer.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = None if body is None else json.dumps(body)
        status, _, raw = self.request(method, path, sent, {"content-type": "application/json", **(headers or {})})
        return status, json.loads(raw) if raw else None


class EventStream:
    """An open ``GET /api/events``: its Server-Sent Events, one at a time, as (event name, decoded data)."""

    def __init__(self, served: Served, headers: dict[str, str] | None = None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        self.connection.request("GET", "/api/events", headers=headers or {})
        self.answer = self.connection.getresponse()
        self.status = self.answer.status
        self.headers = {k.lower(): v for k, v in self.answer.getheaders()}

    def next(self) -> tuple[str, Any]:
        kind, data = "message", ""
        while True:
            line = self.answer.readline().decode()
            if line == "":
                raise EOFError("the event stream ended")
            line = line.rstrip("\n")
            if line == "":
                if data:
                    return kind, json.loads(data)
                continue
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                data += line[len("data: ") :]

    def until(self, found: Any, timeout: float = 10.0) -> list[tuple[str, Any]]:
        """Events until ``found(events so far)`` is true (or fail after ``timeout``)."""
        events: list[tuple[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not found(events):
            assert time.monotonic() < deadline, f"not found in {events}"
            events.append(self.next())
        return events

    def close(self) -> None:
        self.connection.close()

"""The ESL client: the only module that touches greenswitch.

greenswitch is gevent-based and not thread-safe: replies are matched to callers purely by order, and its
greenlets run in the hub of the thread that connected (see ``docs/architecture.md``). Dramatiq runs actors
in plain threads, so :class:`EslPool` gives every thread its own connection, used strictly for
request/response, with every exchange bounded by a ``gevent.Timeout`` (greenswitch itself never times out a
reply) and a fresh connection after any failure.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from typing import Any

import gevent
import gevent.exceptions
import greenswitch
from greenswitch.esl import NotConnectedError

from redswitch.errors import EslAuthError, EslCommandError, EslConnectionError, EslUncertainError

logger = logging.getLogger(__name__)

#: Seconds of hub time given to a connection with unread bytes: one event-loop turn, enough to read an EOF.
FRESHNESS_CHECK = 0.001

#: The operating system's select, even where gevent has patched the module (a zero timeout never blocks).
_real_select = getattr(select, "_original_select", select.select)

_TRANSIENT = (OSError, NotConnectedError, gevent.exceptions.LoopExit, socket.error, EOFError)


class EslClient:
    """One authenticated ESL connection; every call raises EslConnectionError/EslAuthError on failure."""

    def __init__(self, host: str, port: int, password: str, timeout: float = 5.0) -> None:
        self.host, self.port, self.password, self.timeout = host, port, password, timeout
        self._conn: Any = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and bool(self._conn.connected)

    def connect(self) -> None:
        conn = greenswitch.InboundESL(host=self.host, port=self.port, password=self.password, timeout=self.timeout)
        try:
            with gevent.Timeout(self.timeout, EslConnectionError(f"ESL handshake timed out after {self.timeout}s")):
                conn.connect()
        except ValueError:
            _close_quietly(conn)
            raise EslAuthError(f"FreeSWITCH at {self.host}:{self.port} rejected the ESL password") from None
        except _TRANSIENT as exc:
            _close_quietly(conn)
            raise EslConnectionError(f"cannot connect to FreeSWITCH at {self.host}:{self.port}: {exc}") from exc
        except EslConnectionError:
            _close_quietly(conn)
            raise
        self._conn = conn

    def send(self, command: str, timeout: float | None = None) -> Any:
        """Send one command and wait for its reply (a greenswitch ESLEvent) at most ``timeout`` seconds.

        Raises EslConnectionError when the command could not be written (FreeSWITCH surely did not run it)
        and EslUncertainError when it was written but no reply came (it may have run).
        """
        if self._conn is not None and _has_unread_bytes(self._conn):
            # Between commands nothing should arrive on this connection: bytes waiting mean the switch closed it
            # (EOF, disconnect notice). An idle thread's hub has not run since; let it read them, so that we
            # reconnect instead of writing into a dead socket.
            gevent.sleep(FRESHNESS_CHECK)
        if not self.connected:
            self.connect()
        limit = self.timeout if timeout is None else timeout
        try:
            with gevent.Timeout(limit, EslUncertainError(f"no reply from FreeSWITCH within {limit}s")):
                return self._conn.send(command)
        except NotConnectedError as exc:  # raised by greenswitch before writing anything
            self.close()
            raise EslConnectionError(f"ESL connection lost: {exc!r}") from exc
        except _TRANSIENT as exc:
            self.close()
            raise EslUncertainError(f"ESL connection lost while waiting for a reply: {exc!r}") from exc
        except EslUncertainError:
            # The connection may still deliver the late reply to the abandoned waiter; start clean instead.
            self.close()
            raise

    def api(self, command: str, timeout: float | None = None) -> str:
        """Run ``api <command>`` and return its body; ``-ERR`` bodies raise EslCommandError."""
        body = str(self.send(f"api {command}", timeout).data or "")
        if body.startswith("-ERR") or body.startswith("-USAGE"):
            raise EslCommandError(body.strip())
        return body

    def bgapi(self, command: str, job_uuid: str) -> str:
        """Hand ``command`` to FreeSWITCH as a background job with our own Job-UUID; return the Job-UUID."""
        reply = self.send(f"bgapi {command}\nJob-UUID: {job_uuid}")
        text = str(reply.headers.get("Reply-Text", ""))
        if not text.startswith("+OK"):
            raise EslCommandError(text)
        answered = str(reply.headers.get("Job-UUID", ""))
        if answered != job_uuid:  # a reply meant for another command: this connection is out of step
            self.close()
            raise EslUncertainError(f"bgapi reply names job {answered!r}, not ours ({job_uuid})")
        return answered

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)


def _has_unread_bytes(conn: Any) -> bool:
    """A zero-timeout poll of the connection's socket (the real ``select``: this costs microseconds)."""
    try:
        readable, _, _ = _real_select([conn.sock.fileno()], [], [], 0)
    except (OSError, ValueError, AttributeError):
        return True  # closed or broken: let the hub find out
    return bool(readable)


def _close_quietly(conn: Any) -> None:
    """Drop a connection without sending ``exit``: it may be the connection that just failed.

    The socket is shut down first so greenswitch's reader greenlet sees EOF and leaves ``readline``;
    closing its file while it still reads raises "reentrant call".
    """
    conn.connected = False
    conn._run = False
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        gevent.sleep(0)
    for closable in (getattr(conn, "sock_file", None), sock):
        with contextlib.suppress(OSError, RuntimeError):
            if closable is not None:
                closable.close()


class EslPool:
    """One EslClient per thread, created on first use: greenswitch connections must not cross threads."""

    def __init__(self, host: str, port: int, password: str, timeout: float = 5.0) -> None:
        self._args = (host, port, password, timeout)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[EslClient] = []

    def client(self) -> EslClient:
        client: EslClient | None = getattr(self._local, "client", None)
        if client is None:
            client = EslClient(*self._args)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close_all(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

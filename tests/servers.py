"""Real server processes for the test suite: redis-server on free loopback ports.

Tests must be able to kill and restart Redis, so every test session starts its own server instead of using
the machine's. Only processes started here are ever stopped, and only by their pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class RedisServer:
    """A ``redis-server`` child process bound to 127.0.0.1 on a fixed port, restartable on the same port.

    ``tls=True`` serves TLS only (a self-signed certificate made with openssl); ``users`` adds ACL users
    (``{"alice": "secret"}``) and ``password`` protects the default user.
    """

    def __init__(
        self,
        port: int | None = None,
        extra_args: list[str] | None = None,
        tls: bool = False,
        password: str | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.dir = Path(tempfile.mkdtemp(prefix="redswitch-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = tls
        self.password = password
        self.users = users or {}
        if tls:
            self._make_certificate()

    @property
    def url(self) -> str:
        return self.url_for()

    def url_for(self, user: str | None = None, password: str | None = None) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f"{user or ''}:{password}@" if password else ""
        query = f"?ssl_ca_certs={self.dir / 'cert.pem'}" if self.tls else ""
        return f"{scheme}://{auth}{self.host}:{self.port}/0{query}"

    def _make_certificate(self) -> None:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(self.dir / "key.pem"),
                "-out",
                str(self.dir / "cert.pem"),
            ],
            check=True,
            capture_output=True,
        )

    def _security_args(self) -> list[str]:
        args: list[str] = ["--port", str(self.port)]
        if self.tls:
            args = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.dir / "cert.pem"),
                "--tls-key-file",
                str(self.dir / "key.pem"),
                "--tls-ca-cert-file",
                str(self.dir / "cert.pem"),
                "--tls-auth-clients",
                "no",
            ]
        if self.password:
            args += ["--requirepass", self.password]
        for user, secret in self.users.items():
            args += ["--user", user, "on", f">{secret}", "~*", "&*", "+@all"]
        return args

    def start(self) -> RedisServer:
        common = ["--bind", self.host, "--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        args = [self.binary, *common, "--protected-mode", "no", *self._security_args(), *self.extra_args]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.host, self.port)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        client = redis.Redis.from_url(self.url_for(password=self.password), socket_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.exceptions.AuthenticationError:
                return
            except redis.exceptions.RedisError:
                time.sleep(0.02)
        raise TimeoutError("redis-server did not answer PING")

    def kill(self) -> None:
        """SIGKILL the server (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url_for(password=self.password), decode_responses=True)

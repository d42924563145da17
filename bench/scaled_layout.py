"""The scaled layout for benchmarks: a private PostgreSQL, SeaweedFS (S3) and Redis, gunicorn and
Celery workers, all started by one object and stopped by ``stop()`` (docs/scale.md).

Reuses ``mriannot.scaled`` (``start_postgres``, ``start_s3``) and ``mriannot.localredis``, as
``scripts/run.sh --scaled`` does, but runs the web and worker processes in production mode
(``DJANGO_DEBUG=false``, a random secret key, no HTTPS redirect: the benchmark talks plain HTTP
on loopback) with ``DATABASE_CONN_MAX_AGE=60`` as docs/scale.md recommends. ``database="sqlite"``
and ``storage="local"`` give the one-machine layout instead, for comparison.

This process sets the same environment and calls ``django.setup()`` (``Layout.django()``), so a
benchmark builds its data through the services and checks results through the ORM and Django's
storage API against the very database and bucket the servers use.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable


def loadavg() -> str:
    """The first three fields of /proc/loadavg ("1.02 0.87 0.75"), or "" off Linux."""
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return ""


def _wait_http(port: int, path: str, *, process: subprocess.Popen, timeout: float, what: str) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                if answer.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer http://127.0.0.1:{port}{path} within {timeout:.0f} s")


def _stat_times(pid: int) -> tuple[float, float]:
    """(own utime + stime, waited-for children's cutime + cstime) of ``pid`` in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process, its live descendants and the children it has reaped."""
    own, reaped = _stat_times(pid)
    return own + reaped + sum(tree_cpu_seconds(child) for child in _children(pid))


def _start_s3_retrying(start_s3, folder: Path, *, attempts: int = 4, pause_s: float = 15.0):
    """``mriannot.scaled.start_s3``, tried again when SeaweedFS exits at once: its S3 gateway
    also opens an Iceberg catalog on the fixed port 8181 (and Lance on 9101), so a second store
    on the machine (another run of the scaled layout) dies until the first one stops."""
    for attempt in range(attempts):
        try:
            return start_s3(folder)
        except Exception as exc:  # it exits at once, or between listening and answering
            if attempt == attempts - 1:
                raise
            print(f"bench: {exc} (port 8181 taken by another SeaweedFS?); trying again in {pause_s:.0f} s", flush=True)
            time.sleep(pause_s)
    raise AssertionError("unreachable")


class Layout:
    """PostgreSQL or SQLite, S3 or local files, and a private Redis, under one work folder."""

    def __init__(self, *, database: str = "postgres", storage: str = "s3", folder: str | None = None) -> None:
        if database not in ("postgres", "sqlite") or storage not in ("s3", "local"):
            raise ValueError(f"unknown layout {database}/{storage}")
        self.database, self.storage = database, storage
        self.keep = folder is not None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="mriannot-bench-")).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)  # as root, PostgreSQL runs as its own user (mriannot.scaled)
        self.servers: list = []  # PostgreSQL, S3, Redis: stopped last
        self.children: list[subprocess.Popen] = []  # gunicorn, workers
        self.env: dict[str, str] = {}

    @property
    def name(self) -> str:
        return f"{self.database}+{self.storage}"

    def start(self) -> Layout:
        from mriannot.localredis import start_redis
        from mriannot.scaled import start_postgres, start_s3

        env = {k: v for k, v in os.environ.items() if not k.startswith(("MRIANNOT_S3_", "DJANGO_"))}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "mriannot.settings",
                "DJANGO_DEBUG": "false",
                "DJANGO_SECRET_KEY": secrets.token_hex(32),
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DJANGO_SECURE_SSL_REDIRECT": "false",
                "DJANGO_LOG_LEVEL": "WARNING",
                "DATABASE_CONN_MAX_AGE": "60",
                "MRIANNOT_DATA_DIR": str(self.folder / "data"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        try:
            if self.database == "postgres":
                self.servers.append(start_postgres(self.folder / "postgres"))
                env["DATABASE_URL"] = self.servers[-1].url
            else:
                env["DATABASE_URL"] = f"sqlite:///{self.folder / 'db.sqlite3'}"
            if self.storage == "s3":
                self.servers.append(_start_s3_retrying(start_s3, self.folder / "s3"))
                env.update(self.servers[-1].env())
            redis = start_redis(env={})
            self.servers.append(redis)
            env["REDIS_URL"] = redis.url
        except BaseException:
            self.stop()
            raise
        self.env = env
        return self

    def django(self) -> None:
        """Set this process up on the layout (environment, ``django.setup()``) and migrate."""
        os.environ.update(self.env)
        for key in [k for k in os.environ if k.startswith("MRIANNOT_S3_")]:
            if key not in self.env:
                del os.environ[key]
        import django

        django.setup()
        import logging

        from django.core.management import call_command

        call_command("migrate", "--noinput", verbosity=0)
        logging.getLogger("axes").setLevel(logging.WARNING)

    def gunicorn(self, *, workers: int, timeout: float = 120.0) -> int:
        """Start gunicorn with ``workers`` sync workers on a free port; return the port once it answers."""
        from mriannot.localredis import free_port

        port = free_port()
        log = open(self.folder / "gunicorn.log", "ab")  # the child owns it
        command = [PYTHON, "-m", "gunicorn", "mriannot.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers)]
        process = subprocess.Popen(
            [*command, "--timeout", "300", "--error-logfile", "-"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.children.append(process)
        _wait_http(port, "/login/", process=process, timeout=timeout, what="gunicorn")
        return port

    def celery_worker(self, *, queue: str, name: str, concurrency: int = 1) -> subprocess.Popen:
        """Start one Celery worker process on ``queue`` (threads pool, ``concurrency`` threads)."""
        log = open(self.folder / f"celery-{name}.log", "ab")  # the child owns it
        command = [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "mriannot",
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "-Q",
            queue,
            "-n",
            f"{name}@%h",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--prefetch-multiplier=1",
        ]
        process = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.children.append(process)
        return process

    def server_pids(self) -> dict[str, int]:
        """The root process of each server started here: postgres, s3, redis, and gunicorn."""
        pids: dict[str, int] = {}
        for server in self.servers:
            kind = type(server).__name__
            if kind == "LocalPostgres":
                try:
                    pids["postgres"] = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pass
            elif kind == "LocalS3" and server.process is not None:
                pids["s3"] = server.process.pid
            elif kind == "LocalRedis" and getattr(server, "process", None) is not None:
                pids["redis"] = server.process.pid
        for child in self.children:
            if "gunicorn" in child.args:
                pids["gunicorn"] = child.pid
        return pids

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds each server (with its worker processes) has used so far (Linux /proc)."""
        return {name: round(tree_cpu_seconds(pid), 2) for name, pid in self.server_pids().items()}

    def stop_children(self) -> None:
        from mriannot.launcher import stop_children

        stop_children(self.children, timeout=20.0)
        self.children.clear()

    def stop(self) -> None:
        try:
            self.stop_children()
        finally:
            for server in reversed(self.servers):
                try:
                    server.stop()
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    print(f"bench: stopping {server!r}: {exc}", flush=True)
            self.servers.clear()
            if not self.keep:
                shutil.rmtree(self.folder, ignore_errors=True)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0

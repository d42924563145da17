"""Run the whole app locally: Redis, a Celery worker and the web server (``scripts/run.sh``).

Migrates, loads the demo project into an empty database, starts a private Redis unless
REDIS_URL is set, a Celery worker on every queue, and the web server; prints the URL and
the demo logins. Ctrl-C stops everything it started. Running it twice is harmless: each
run gets its own Redis and the next free web port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mriannot.localredis import free_port, start_redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PYTHON, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, check=True)


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_DEBUG", "true")
    env.setdefault("DJANGO_SETTINGS_MODULE", "mriannot.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    os.environ.update(env)
    Path(env.get("MRIANNOT_DATA_DIR", ROOT / "var")).mkdir(parents=True, exist_ok=True)

    redis = start_redis(env=env)
    env["REDIS_URL"] = redis.url
    print(f"mriannot: Redis at {redis.url} ({redis.source})", flush=True)
    children: list[subprocess.Popen] = []

    def stop() -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        redis.stop()

    def interrupt(*_args):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        print("mriannot: migrating the database ...", flush=True)
        manage("migrate", "--noinput", "-v", "0", env=env)
        # A private Redis starts empty: jobs queued before it was restarted are sent again.
        manage("jobs_requeue", *(["--queued-for", "0"] if redis.process else []), env=env)
        manage("demo_project", "--if-empty", env=env)

        port = int(env.get("MRIANNOT_PORT", "8000"))
        if not port_is_free(port):
            taken, port = port, free_port()
            print(f"mriannot: port {taken} is taken (another instance?); using {port}", flush=True)
        children.append(
            subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "celery",
                    "-A",
                    "mriannot",
                    "worker",
                    "--pool=threads",
                    "--concurrency=2",
                    "-Q",
                    "default,consensus,training,export",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                ],
                env=env,
                cwd=ROOT,
            )
        )
        children.append(
            subprocess.Popen(
                [PYTHON, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"], env=env, cwd=ROOT
            )
        )
        time.sleep(1.0)
        print(
            "\n"
            f"  mriannot is running at http://127.0.0.1:{port}/   (API docs: /api/docs/, admin: /admin/)\n"
            "  Demo logins (password 'mriannot' for all): lead, rater1, rater2, rater3, rater4, admin\n"
            "  The demo cohort is SIMULATED from the MNI152 2009a template (see README).\n"
            "  Press Ctrl-C to stop.\n",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("mriannot: a process stopped unexpectedly; stopping the others.", flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nmriannot: stopping ...", flush=True)
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())

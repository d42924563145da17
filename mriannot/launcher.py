"""Run the whole app locally: Redis, a Celery worker and the web server (``scripts/run.sh``).

Migrates, loads the demo project into an empty database, starts a private Redis unless
REDIS_URL is set, a Celery worker on every queue, and the web server; prints the URL and
the demo logins. Ctrl-C stops everything it started. Running it twice is harmless: each
run gets its own Redis and the next free web port.

``--scaled`` (``scripts/run.sh --scaled``) starts instead, on this one machine, the layout a
site spreads over many (docs/scale.md): a private PostgreSQL cluster and a SeaweedFS S3 store
under the data folder (unless ``DATABASE_URL`` / ``MRIANNOT_S3_BUCKET`` name a site's own),
Redis, gunicorn with ``MRIANNOT_WEB_WORKERS`` workers (4) and one Celery worker per queue
(consensus, training, export, default).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mriannot.localredis import free_port, start_redis

#: The Celery workers of the scaled layout: queue -> concurrency (threads).
SCALED_WORKERS = {"consensus": 2, "training": 1, "export": 1, "default": 2}

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PYTHON, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, check=True)


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def stop_children(children: list[subprocess.Popen], *, timeout: float = 10.0) -> None:
    """SIGTERM every child still running, wait up to ``timeout`` in all, kill what is left;
    one child that cannot be stopped does not keep the others running."""
    for child in children:
        try:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        except OSError:
            pass  # already gone
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def celery_worker(queue: str | None, concurrency: int) -> list[str]:
    """The command of a Celery worker on ``queue`` (None: every queue)."""
    command = [PYTHON, "-m", "celery", "-A", "mriannot", "worker", "--pool=threads", f"--concurrency={concurrency}"]
    if queue is not None:
        command += ["-Q", queue, "-n", f"{queue}@%h"]
    return [*command, "--loglevel=INFO", "--without-gossip", "--without-mingle"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    unknown = [a for a in argv if a != "--scaled"]
    if unknown:
        print(f"mriannot: unknown argument {unknown[0]!r}; the launcher takes only --scaled", file=sys.stderr)
        return 2
    scaled = "--scaled" in argv
    env = dict(os.environ)
    env.setdefault("DJANGO_DEBUG", "true")
    env.setdefault("DJANGO_SETTINGS_MODULE", "mriannot.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    os.environ.update(env)
    Path(env.get("MRIANNOT_DATA_DIR", ROOT / "var")).mkdir(parents=True, exist_ok=True)

    # The first Ctrl-C or SIGTERM stops everything; the ones after it are ignored, so that the
    # stop runs to its end (no traceback, no Redis or worker left behind).
    def ignore_signals() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def interrupt(*_args):
        ignore_signals()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    children: list[subprocess.Popen] = []
    redis = None
    servers: list = []  # the scaled layout's PostgreSQL and S3, stopped last

    def stop() -> None:
        ignore_signals()
        try:
            stop_children(children)
        finally:
            if redis is not None:
                redis.stop()
            for server in reversed(servers):
                try:
                    server.stop()
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # the others still stop
                    print(f"mriannot: stopping {server!r}: {exc}", flush=True)

    try:
        if scaled:
            from mriannot.scaled import start_postgres, start_s3

            data_dir = Path(env.get("MRIANNOT_DATA_DIR", ROOT / "var")).resolve()
            if not env.get("DATABASE_URL"):
                print("mriannot: starting PostgreSQL (a private cluster under the data folder) ...", flush=True)
                servers.append(start_postgres(data_dir / "scaled" / "postgres"))
                env["DATABASE_URL"] = servers[-1].url
            if not env.get("MRIANNOT_S3_BUCKET"):
                print("mriannot: starting SeaweedFS (S3) ...", flush=True)
                servers.append(start_s3(data_dir / "scaled" / "s3"))
                env.update(servers[-1].env())
            os.environ.update(env)
            print(f"mriannot: database {env['DATABASE_URL']}", flush=True)
            print(
                f"mriannot: S3 bucket {env['MRIANNOT_S3_BUCKET']} at {env.get('MRIANNOT_S3_ENDPOINT_URL')}", flush=True
            )
        redis = start_redis(env=env)
        env["REDIS_URL"] = redis.url
        print(f"mriannot: Redis at {redis.url} ({redis.source})", flush=True)
        print("mriannot: migrating the database ...", flush=True)
        manage("migrate", "--noinput", "-v", "0", env=env)
        # A private Redis starts empty: jobs queued before it was restarted are sent again.
        manage("jobs_requeue", *(["--queued-for", "0"] if redis.process else []), env=env)
        # Temporary files of writes that were cut off, and files no row names, older than an hour.
        manage("files_cleanup", env=env)
        if env.get("MRIANNOT_DEMO", "1") != "0":  # MRIANNOT_DEMO=0: no demo project
            manage("demo_project", "--if-empty", env=env)

        port = int(env.get("MRIANNOT_PORT", "8000"))
        if not port_is_free(port):
            taken, port = port, free_port()
            print(f"mriannot: port {taken} is taken (another instance?); using {port}", flush=True)
        if scaled:
            manage("collectstatic", "--noinput", "-v", "0", env=env)
            for queue, concurrency in SCALED_WORKERS.items():
                children.append(subprocess.Popen(celery_worker(queue, concurrency), env=env, cwd=ROOT))
            workers = env.get("MRIANNOT_WEB_WORKERS", "4")
            web = [PYTHON, "-m", "gunicorn", "mriannot.wsgi", "-b", f"127.0.0.1:{port}", "-w", workers]
            children.append(subprocess.Popen([*web, "--timeout", "300", "--access-logfile", "-"], env=env, cwd=ROOT))
        else:
            # every queue (CELERY_TASK_QUEUES); it also re-sends lost jobs
            children.append(subprocess.Popen(celery_worker(None, 2), env=env, cwd=ROOT))
            children.append(
                subprocess.Popen(
                    [PYTHON, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"],
                    env=env,
                    cwd=ROOT,
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

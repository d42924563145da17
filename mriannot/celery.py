"""The Celery application: Redis broker and result backend from REDIS_URL.

Every worker (``celery -A mriannot worker``; with no ``-Q`` it consumes every queue of
``CELERY_TASK_QUEUES``) runs a watch beside its pool, a thread that

- announces the worker and its queues in Redis every ``MRIANNOT_JOB_HEARTBEAT_S``, with an
  expiry, so the dashboard can say which queue has no worker (``mriannot.queue.queues_health``);
- every ``MRIANNOT_JOBS_REQUEUE_EVERY_S`` (0: never), in one worker at a time, sends again the
  jobs whose worker died or whose message was lost (``mriannot.jobs.jobs_requeue_stale``, the
  same as ``manage.py jobs_requeue``).

A watch in the worker rather than celery beat: there is no second process to deploy or forget,
a worker started any way (plain, ``-Q``, the launcher) does it, and a Redis key lets one worker
of many run each check.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from celery import Celery, bootsteps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mriannot.settings")

log = logging.getLogger(__name__)

app = Celery("mriannot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def jobs_check() -> dict[str, list[int]]:
    """One periodic check: send again what was lost (see mriannot.jobs); never raises."""
    from django.db import connections

    from mriannot.jobs import BrokerUnreachable, jobs_requeue_stale

    try:
        sent = jobs_requeue_stale()
    except BrokerUnreachable as exc:
        log.warning("jobs check: %s", exc)
        sent = exc.sent
    except Exception:
        log.exception("jobs check failed; the next one tries again")
        sent = {}
    finally:
        connections.close_all()  # this thread's connections only
    if sent:
        log.warning("jobs check: sent again %s", sent)
    return sent


class WorkerWatch(bootsteps.StartStopStep):
    """The worker's watch thread (see the module docstring)."""

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent) -> None:
        from django.conf import settings

        hostname = parent.hostname
        queues = sorted(parent.app.amqp.queues.consume_from.keys())
        beat = settings.MRIANNOT_JOB_HEARTBEAT_S
        every = settings.MRIANNOT_JOBS_REQUEUE_EVERY_S
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(hostname, queues, beat, every), name="mriannot worker watch", daemon=True
        )
        self._thread.start()

    def _run(self, hostname: str, queues: list[str], beat: float, every: float) -> None:
        from mriannot.queue import once_per, worker_announce

        tick = min(beat, every) if every > 0 else beat
        next_beat = next_check = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + beat
                try:
                    worker_announce(hostname=hostname, queues=queues)
                except Exception as exc:  # noqa: BLE001 - Redis is down: the worker reconnects on its own
                    log.warning("worker watch: could not announce %s: %s", hostname, exc)
            if every > 0 and now >= next_check:
                next_check = now + every
                if once_per("jobs-check", every * 0.9):
                    jobs_check()
            self._stop.wait(tick)

    def stop(self, parent) -> None:
        from mriannot.queue import worker_announce

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            worker_announce(hostname=parent.hostname, queues=(), leaving=True)
        except Exception as exc:  # noqa: BLE001 - Redis is down: the record expires on its own
            log.warning("worker watch: could not sign off %s: %s", parent.hostname, exc)

    terminate = stop


app.steps["worker"].add(WorkerWatch)

"""Hand tasks to the broker without ever holding up a request, and read the queues' health.

A request that queues work must answer at once, broker up or down:

- :func:`task_send` connects once, with the short ``MRIANNOT_BROKER_CONNECT_TIMEOUT_S``, and
  publishes without retries; a failure is logged and reported as ``False``;
- :func:`enqueue_on_commit` sends when the current transaction commits (the worker sees what
  was saved). A job whose send failed stays 'queued' with no ``sent_at``; the workers' periodic
  check (``manage.py jobs_requeue``, every ``MRIANNOT_JOBS_REQUEUE_EVERY_S``) sends it when the
  broker is back, and so does asking for it again.

Workers announce themselves in Redis (:func:`worker_announce`, from the worker watch in
``mriannot/celery.py``); :func:`queues_health` puts that beside the jobs waiting in the
database, for the dashboard. Reading Redis gives up quickly and is cached, so a dashboard
stays fast when Redis is down.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

#: How a send from a request publishes: once, no retry, no result to wait for.
PUBLISH_OPTIONS = {"retry": False, "ignore_result": True}

WORKER_KEY = "mriannot:worker:"  # + hostname: {"queues": [...], "seen": epoch s}, expires
QUEUE_SEEN_KEY = "mriannot:queue-seen:"  # + queue name: epoch s a worker last consumed it


def task_send(name: str, args: Iterable) -> bool:
    """Publish task ``name`` with ``args`` now; True when the broker took it.

    Gives up after one connection attempt of ``MRIANNOT_BROKER_CONNECT_TIMEOUT_S`` and never
    retries the publish, so a request never waits on a broker that is down.
    """
    from celery import current_app

    args = list(args)
    timeout = settings.MRIANNOT_BROKER_CONNECT_TIMEOUT_S
    try:
        with current_app.connection_for_write(
            connect_timeout=timeout, transport_options={"socket_connect_timeout": timeout}
        ) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
            current_app.send_task(name, args=args, connection=conn, **PUBLISH_OPTIONS)
    except Exception as exc:  # noqa: BLE001 - the broker is down or refuses: the row stays queued
        log.warning("could not queue %s%s (%s); it stays queued until sent again", name, tuple(args), exc)
        return False
    return True


def enqueue_on_commit(task, *args) -> None:
    """Send ``task(*args)`` once the current transaction commits; never raises.

    When the task runs a job (a :class:`mriannot.jobs.Job` names it), the row records when it
    was sent, or that it was not, so the periodic check can tell a failed send from a message
    waiting its turn.
    """
    name = getattr(task, "name", task)

    def send() -> None:
        from mriannot.jobs import job_record_send

        job_record_send(task_name=name, pk=args[0] if args else None, sent=task_send(name, args))

    transaction.on_commit(send, robust=True)


#: Options every task shares: acknowledged after it ran (a worker that dies mid-task leaves
#: it to another), retried a bounded number of times on a database or storage hiccup.
#: Each task adds its own time limit. Services make a second execution harmless.
def task_options(*, time_limit: int) -> dict:
    from django.db import OperationalError

    return {
        "acks_late": True,
        "reject_on_worker_lost": True,
        "autoretry_for": (OperationalError, OSError),
        "max_retries": 3,
        "retry_backoff": True,
        "time_limit": time_limit,
        "soft_time_limit": time_limit - 60,
    }


# --- Redis beside the broker: worker presence, a cluster-wide "once per period" --------------


def broker_redis():
    """A Redis client on the broker's database that gives up quickly (never blocks a page)."""
    import redis
    from celery import current_app

    timeout = settings.MRIANNOT_BROKER_CONNECT_TIMEOUT_S
    return redis.Redis.from_url(
        current_app.conf.broker_url,
        socket_connect_timeout=timeout,
        socket_timeout=max(timeout, 2.0),
        retry_on_timeout=False,
    )


def once_per(key: str, seconds: float) -> bool:
    """True for the first caller in ``seconds`` across every process sharing the broker; False
    for the others, and when Redis cannot be reached (nothing could be sent anyway)."""
    try:
        with broker_redis() as client:
            return bool(client.set(f"mriannot:once:{key}", "1", nx=True, px=max(1, int(seconds * 1000))))
    except Exception as exc:  # noqa: BLE001 - Redis is down: nobody acts now, the next period will
        log.warning("Redis unreachable for %s: %s", key, exc)
        return False


def once_per_reset(key: str) -> None:
    """Let the next :func:`once_per` of ``key`` through (the action it guarded did not happen)."""
    try:
        with broker_redis() as client:
            client.delete(f"mriannot:once:{key}")
    except Exception as exc:  # noqa: BLE001 - Redis is down: the key expires on its own
        log.warning("Redis unreachable for %s: %s", key, exc)


def worker_announce(*, hostname: str, queues: Iterable[str], leaving: bool = False) -> None:
    """Record (or, ``leaving``, remove) a worker and the queues it consumes; expires after a
    heartbeat lease, so a killed worker drops out on its own."""
    with broker_redis() as client:
        if leaving:
            client.delete(WORKER_KEY + hostname)
            return
        now = time.time()
        queues = sorted(queues)
        lease = settings.MRIANNOT_JOB_HEARTBEAT_LEASE_S
        pipe = client.pipeline()
        pipe.set(WORKER_KEY + hostname, json.dumps({"queues": queues, "seen": now}), px=int(lease * 1000))
        for queue in queues:
            pipe.set(QUEUE_SEEN_KEY + queue, str(now), ex=30 * 24 * 3600)
        pipe.execute()


_health_cache: dict = {}
_health_lock = threading.Lock()


def _workers_now() -> dict:
    """{"broker": "ok"|"unreachable", "workers": {hostname: [queue, ...]}, "seen": {queue: epoch s}},
    from Redis, cached for ``MRIANNOT_QUEUE_HEALTH_CACHE_S`` (failures too)."""
    with _health_lock:
        cached = _health_cache.get("value")
        if cached is not None and time.monotonic() - _health_cache["at"] < settings.MRIANNOT_QUEUE_HEALTH_CACHE_S:
            return cached
        try:
            with broker_redis() as client:
                keys = sorted(client.scan_iter(match=WORKER_KEY + "*", count=500))
                raws = client.mget(keys) if keys else []
                names = list(settings.MRIANNOT_QUEUES)
                stamps = client.mget([QUEUE_SEEN_KEY + n for n in names])
            workers = {}
            for key, raw in zip(keys, raws, strict=True):
                if raw is not None:
                    workers[key.decode()[len(WORKER_KEY) :]] = json.loads(raw)["queues"]
            seen = {n: float(v) for n, v in zip(names, stamps, strict=True) if v}
            value = {"broker": "ok", "workers": workers, "seen": seen}
        except Exception as exc:  # noqa: BLE001 - Redis down: say so, do not wait for it
            log.warning("queue health: Redis unreachable: %s", exc)
            value = {"broker": "unreachable", "workers": None, "seen": {}}
        _health_cache.update(value=value, at=time.monotonic())
        return value


def queues_health_reset() -> None:
    """Forget the cached worker list (tests, and after changing the broker)."""
    with _health_lock:
        _health_cache.clear()


def queues_health() -> dict:
    """Per queue: the jobs waiting for it (count, oldest age), the workers consuming it, and when
    a worker was last seen on it. ``workers`` is None when Redis cannot be reached."""
    from django.utils import timezone

    from mriannot.jobs import job_kinds, job_queue, jobs_waiting

    state = _workers_now()
    now = timezone.now()
    rows = []
    for name in settings.MRIANNOT_QUEUES:
        kinds = [model for model in job_kinds() if job_queue(model) == name]
        waiting, oldest = jobs_waiting(kinds)
        consumers = None if state["workers"] is None else sorted(h for h, qs in state["workers"].items() if name in qs)
        seen = state["seen"].get(name)
        rows.append(
            {
                "name": name,
                "kinds": [model._meta.label for model in kinds],
                "waiting": waiting,
                "oldest_waiting_s": None if oldest is None else max(0.0, (now - oldest).total_seconds()),
                "workers": consumers,
                "worker_last_seen_at": None if seen is None else _iso(seen),
                "no_worker": consumers == [],
            }
        )
    return {
        "broker": state["broker"],
        "waiting_after_s": settings.MRIANNOT_JOB_WAITING_S,
        "queues": rows,
    }


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()

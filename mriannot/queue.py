"""Queue Celery tasks once the current transaction commits, without failing the request.

``task.delay_on_commit`` raises from the commit hook when the broker is down, so a save
that has already landed would answer 500. Here the send is ``robust``: a failure is logged
and the row stays 'queued', to be sent again by ``manage.py jobs_requeue`` (which
``scripts/run.sh`` runs at start) or by the user asking again.
"""

from __future__ import annotations

import functools
import logging

from django.db import transaction

log = logging.getLogger(__name__)


def enqueue_on_commit(task, *args) -> None:
    def send() -> None:
        try:
            task.delay(*args)
        except Exception:
            log.exception("could not queue %s%s; it stays queued until sent again", task.name, args)

    transaction.on_commit(functools.partial(send))


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

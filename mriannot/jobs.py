"""One lifecycle for every background job: consensus runs, exports, model versions.

A job is a row (a concrete subclass of :class:`Job`) and a Celery task that takes its id.
The row says where the job is; the task does the work through :func:`job_execute`, which

- locks the row, and returns it untouched when it is done, or running on another worker
  whose heartbeat is fresh (a duplicate message does nothing);
- marks it running, counts the attempt and clears the last error;
- runs the work with a heartbeat: a thread writes ``heartbeat_at`` every
  ``MRIANNOT_JOB_HEARTBEAT_S`` (as does every :func:`job_progress`) until the work returns;
- the work marks it done (:meth:`Job.mark_done`) in its own transaction;
- records a failure (status, error, time) and re-raises it, so Celery's bounded retries
  see it.

A running job holds a lease: its heartbeat must be younger than the kind's heartbeat lease
(``heartbeat_lease_s``, by default ``MRIANNOT_JOB_HEARTBEAT_LEASE_S``: three heartbeats), and
it must not run past ``lease_s`` (its task's time limit and a margin). A job past its lease
lost its worker (killed, machine gone): it is queued again and sent again. A queued job
whose message never reached the broker (``sent_at`` empty after ``MRIANNOT_JOB_SEND_GRACE_S``:
the broker was down) is sent again; one sent but not taken for ``lease_s`` (the broker lost
its messages) too. :func:`jobs_requeue_stale` does both for every kind, and the requeue hooks
of the apps (:func:`jobs_requeue_hook`) re-send work that has no row (scoring). It runs in
every worker every ``MRIANNOT_JOBS_REQUEUE_EVERY_S`` (one worker at a time; see
``mriannot/celery.py``), at the launcher's start, and as ``manage.py jobs_requeue``. Requesting
a stale job again through its service sends it again too (:func:`job_send_if_stale`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connection, connections, models, transaction
from django.db.models import Min
from django.utils import timezone

log = logging.getLogger(__name__)


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """Status, progress and history of one background job (abstract)."""

    #: Celery task (registered name) that executes a job of this kind; it takes the row's id.
    task_name: str = ""
    #: Seconds a run may take at most (the task's time limit and a margin); past it, it is lost
    #: even with a heartbeat. Also how long a sent job may wait in the broker before it is sent again.
    lease_s: float = 3600.0
    #: Seconds without a heartbeat after which a running job's worker is presumed dead
    #: (None: ``settings.MRIANNOT_JOB_HEARTBEAT_LEASE_S``).
    heartbeat_lease_s: float | None = None

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="when its task was last handed to the broker (empty: not yet)"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="last sign of life of the worker running it")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def mark_done(self, message: str) -> None:
        """Set the finished state on this instance (the caller saves it with its results)."""
        self.status = JobStatus.DONE
        self.progress = 1.0
        self.message = message[:200]
        self.finished_at = timezone.now()

    @classmethod
    def heartbeat_lease(cls) -> float:
        """Seconds without a heartbeat after which a running job of this kind is presumed lost."""
        return cls.heartbeat_lease_s if cls.heartbeat_lease_s is not None else settings.MRIANNOT_JOB_HEARTBEAT_LEASE_S

    def is_stale(self, *, queued_for_s: float | None = None, now: datetime | None = None) -> bool:
        """Lost, and to be sent again:

        - queued, and never handed to the broker ``MRIANNOT_JOB_SEND_GRACE_S`` after it was
          queued, or handed over longer ago than ``queued_for_s`` (default: the kind's lease);
        - running, with no heartbeat for the heartbeat lease, or started longer ago than the lease.
        """
        now = now or timezone.now()
        if self.status == JobStatus.QUEUED:
            if self.sent_at is None and self.created_at <= now - timedelta(seconds=settings.MRIANNOT_JOB_SEND_GRACE_S):
                return True
            wait = self.lease_s if queued_for_s is None else queued_for_s
            return (self.sent_at or self.created_at) <= now - timedelta(seconds=wait)
        if self.status == JobStatus.RUNNING:
            if self.started_at is None or self.started_at <= now - timedelta(seconds=self.lease_s):
                return True
            beat = self.heartbeat_at or self.started_at
            return beat <= now - timedelta(seconds=self.heartbeat_lease())
        return False


J = TypeVar("J", bound=Job)


def job_progress(model: type[Job], pk: int, fraction: float, message: str) -> None:
    """Record how far a running job is, for the pages that follow it; it is a heartbeat too."""
    model.objects.filter(pk=pk, status=JobStatus.RUNNING).update(
        progress=fraction, message=message[:200], heartbeat_at=timezone.now()
    )


class _Heartbeat:
    """A thread that writes the job's ``heartbeat_at`` every ``every`` seconds while the work runs.

    It beats only for the attempt that started it: once the row is finished, failed, or taken
    over by another attempt, it stops. A database error (a lock held too long) skips one beat.
    """

    def __init__(self, model: type[Job], pk: int, attempt: int, every: float) -> None:
        self.model, self.pk, self.attempt, self.every = model, pk, attempt, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {model._meta.label} {pk}", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    alive = self.model.objects.filter(
                        pk=self.pk, status=JobStatus.RUNNING, attempts=self.attempt
                    ).update(heartbeat_at=timezone.now())
                except DatabaseError as exc:
                    log.warning("heartbeat of %s %s skipped: %s", self.model._meta.label, self.pk, exc)
                    continue
                if not alive:
                    return
        finally:
            connections.close_all()  # this thread's connections only

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def job_execute(model: type[J], pk: int, work: Callable[[J], J], *, select_related: tuple[str, ...] = ()) -> J:
    """Claim the job, run ``work(job)`` with a heartbeat and return what it returns; see the
    module docstring."""
    with transaction.atomic():
        job = model.objects.select_for_update().select_related(*select_related).get(pk=pk)
        if job.status == JobStatus.DONE or (job.status == JobStatus.RUNNING and not job.is_stale()):
            return job
        job.status = JobStatus.RUNNING
        job.started_at = job.heartbeat_at = timezone.now()
        job.attempts += 1
        job.error = ""
        job.save(update_fields=["status", "started_at", "heartbeat_at", "attempts", "error"])
    # Another connection cannot see a row that this one's open transaction holds (a caller
    # inside atomic()): there the job's own job_progress calls are its only heartbeat.
    beating = not connection.in_atomic_block and settings.MRIANNOT_JOB_HEARTBEAT_S > 0
    heartbeat = _Heartbeat(model, pk, job.attempts, settings.MRIANNOT_JOB_HEARTBEAT_S) if beating else None
    try:
        if heartbeat is None:
            return work(job)
        with heartbeat:
            return work(job)
    except Exception as exc:
        # A service's refusal is already a sentence for the user; anything else names its type.
        error = exc.message if isinstance(getattr(exc, "message", None), str) else f"{type(exc).__name__}: {exc}"
        model.objects.filter(pk=pk).update(
            status=JobStatus.FAILED,
            error=error,
            message="failed",
            finished_at=timezone.now(),
        )
        raise


# --- sending, and sending again -----------------------------------------------------------------


class BrokerUnreachable(Exception):
    """The broker took no message; the jobs stay queued for the next check. ``sent``: what was
    sent before it failed, per kind."""

    def __init__(self, sent: dict[str, list[int]]) -> None:
        super().__init__("the broker cannot be reached; the jobs stay queued and are sent by the next check")
        self.sent = sent


def job_kinds() -> list[type[Job]]:
    """Every concrete job model of the installed apps."""
    return [model for model in apps.get_models() if issubclass(model, Job)]


def job_record_send(*, task_name: str, pk, sent: bool) -> None:
    """Record whether a queued job's task reached the broker (called by ``mriannot.queue``): a
    job whose send failed has no ``sent_at``, so the next check sends it."""
    for model in job_kinds():
        if model.task_name == task_name and pk is not None:
            model.objects.filter(pk=pk, status=JobStatus.QUEUED).update(sent_at=timezone.now() if sent else None)


def job_send(job: Job) -> bool:
    """Send the job's task now (new jobs are sent on commit instead); True when the broker took
    it. Never waits on a broker that is down (see ``mriannot.queue.task_send``)."""
    from mriannot.queue import task_send

    sent = task_send(job.task_name, [job.pk])
    job_record_send(task_name=job.task_name, pk=job.pk, sent=sent)
    return sent


def job_requeue(job: Job, *, queued_for_s: float | None = None) -> bool:
    """Send a stale job again; True when it was sent.

    A running job that lost its worker goes back to 'queued' first, in one conditional update,
    so that of several requeuers (the periodic check, the launcher, a user asking again) one
    sends it, and a worker whose heartbeat came back in the meantime keeps it.
    """
    model = type(job)
    if not job.is_stale(queued_for_s=queued_for_s):
        return False
    if job.status == JobStatus.RUNNING:
        taken = model.objects.filter(
            pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts, heartbeat_at=job.heartbeat_at
        ).update(status=JobStatus.QUEUED, sent_at=None, message="its worker was lost; queued again")
        if not taken:
            return False
        log.warning("%s %s lost its worker (attempt %s); queued again", model._meta.label, job.pk, job.attempts)
        job.status, job.sent_at = JobStatus.QUEUED, None
    return job_send(job)


def job_send_if_stale(job: Job) -> bool:
    """Send the job's task again, once the current transaction commits, if its message was lost or
    its worker died; True when it is stale (whether the broker takes it is logged)."""
    if not job.is_stale():
        return False
    transaction.on_commit(lambda: job_requeue(job), robust=True)
    return True


#: Re-senders of work that has no job row, by app: ``hook(queued_for_s=...) -> {kind: [ids]}``.
_requeue_hooks: list[Callable[..., dict[str, list]]] = []


def jobs_requeue_hook(hook: Callable[..., dict[str, list]]) -> Callable[..., dict[str, list]]:
    """Register ``hook`` to run with every :func:`jobs_requeue_stale` (a decorator)."""
    if hook not in _requeue_hooks:
        _requeue_hooks.append(hook)
    return hook


def jobs_requeue_stale(*, queued_for_s: float | None = None) -> dict[str, list[int]]:
    """Send again every stale job of every kind (see :meth:`Job.is_stale`; ``queued_for_s=0``
    after the broker lost its messages), then run the apps' requeue hooks. Returns the ids
    sent, per kind. Raises :class:`BrokerUnreachable` at the first message the broker refuses
    (the rest stays queued for the next check)."""
    sent: dict[str, list[int]] = {}
    now = timezone.now()
    for model in job_kinds():
        for job in model.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).order_by("pk"):
            if not job.is_stale(queued_for_s=queued_for_s, now=now):
                continue
            if job_requeue(job, queued_for_s=queued_for_s):
                sent.setdefault(model._meta.label, []).append(job.pk)
            elif job.status == JobStatus.QUEUED:  # still queued: the broker refused it
                raise BrokerUnreachable(sent)
    for hook in _requeue_hooks:
        for kind, ids in hook(queued_for_s=queued_for_s).items():
            sent.setdefault(kind, []).extend(ids)
    return sent


# --- what the pages show ---------------------------------------------------------------------


def job_queue(model: type[Job]) -> str:
    """The Celery queue a job kind's task is routed to."""
    from celery import current_app

    return current_app.amqp.router.route({}, model.task_name)["queue"].name


def jobs_waiting(kinds: list[type[Job]]) -> tuple[int, datetime | None]:
    """How many jobs of these kinds are queued, and since when the oldest."""
    count, oldest = 0, None
    for model in kinds:
        row = model.objects.filter(status=JobStatus.QUEUED).aggregate(n=models.Count("pk"), oldest=Min("created_at"))
        count += row["n"]
        if row["oldest"] is not None and (oldest is None or row["oldest"] < oldest):
            oldest = row["oldest"]
    return count, oldest

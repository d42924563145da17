"""One lifecycle for every background job: consensus runs, exports, model versions.

A job is a row (a concrete subclass of :class:`Job`) and a Celery task that takes its id.
The row says where the job is; the task does the work through :func:`job_execute`, which

- locks the row, and returns it untouched when it is done, or running on another worker
  within its lease (a duplicate message does nothing);
- marks it running, counts the attempt and clears the last error;
- runs the work, which marks it done (:meth:`Job.mark_done`) in its own transaction;
- records a failure (status, error, time) and re-raises it, so Celery's bounded retries
  see it.

A job whose message was lost (broker restarted, enqueue failed) stays queued, and a job
whose worker died stays running; :func:`jobs_requeue_stale` (``manage.py jobs_requeue``, run
by the launcher at start) sends such jobs of every kind again. Requesting a stale job again
through its service sends it again too (:func:`job_send_if_stale`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """Status, progress and history of one background job (abstract)."""

    #: Celery task (registered name) that executes a job of this kind; it takes the row's id.
    task_name: str = ""
    #: Seconds after which a running job's worker is presumed dead (the task's time limit and a margin).
    lease_s: float = 3600.0

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def mark_done(self, message: str) -> None:
        """Set the finished state on this instance (the caller saves it with its results)."""
        self.status = JobStatus.DONE
        self.progress = 1.0
        self.message = message[:200]
        self.finished_at = timezone.now()

    def is_stale(self, *, queued_for_s: float | None = None) -> bool:
        """Queued longer than ``queued_for_s`` (default: the lease), or running past the lease."""
        now = timezone.now()
        if self.status == JobStatus.QUEUED:
            wait = self.lease_s if queued_for_s is None else queued_for_s
            return self.created_at <= now - timedelta(seconds=wait)
        if self.status == JobStatus.RUNNING:
            return self.started_at is None or self.started_at <= now - timedelta(seconds=self.lease_s)
        return False


J = TypeVar("J", bound=Job)


def job_progress(model: type[Job], pk: int, fraction: float, message: str) -> None:
    """Record how far a job is, for the pages that follow it."""
    model.objects.filter(pk=pk).update(progress=fraction, message=message[:200])


def job_execute(model: type[J], pk: int, work: Callable[[J], J], *, select_related: tuple[str, ...] = ()) -> J:
    """Claim the job, run ``work(job)`` and return what it returns; see the module docstring."""
    with transaction.atomic():
        job = model.objects.select_for_update().select_related(*select_related).get(pk=pk)
        if job.status == JobStatus.DONE or (job.status == JobStatus.RUNNING and not job.is_stale()):
            return job
        job.status = JobStatus.RUNNING
        job.started_at = timezone.now()
        job.attempts += 1
        job.error = ""
        job.save(update_fields=["status", "started_at", "attempts", "error"])
    try:
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


def job_send(job: Job) -> None:
    """Send the job's task now (after a lost message; new jobs are queued on commit instead)."""
    from celery import current_app

    current_app.send_task(job.task_name, args=[job.pk])


def job_send_if_stale(job: Job) -> bool:
    """Send the job's task again if its message was lost or its worker died."""
    if job.is_stale():
        job_send(job)
        return True
    return False


def job_kinds() -> list[type[Job]]:
    """Every concrete job model of the installed apps."""
    return [model for model in apps.get_models() if issubclass(model, Job)]


def jobs_requeue_stale(*, queued_for_s: float | None = None) -> dict[str, list[int]]:
    """Send again every job left queued longer than ``queued_for_s`` (default: its lease) or
    running past its lease, of every kind. Returns the ids sent, per kind."""
    sent: dict[str, list[int]] = {}
    for model in job_kinds():
        for job in model.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).order_by("pk"):
            if job.is_stale(queued_for_s=queued_for_s):
                job_send(job)
                sent.setdefault(model._meta.label, []).append(job.pk)
    return sent

"""Celery tasks of active learning (queue 'training'): each takes an id and calls one service
(imported when it runs, so that services can import their tasks to queue them).

Scoring has no job row: a scoring whose message was lost (the broker was down when the scans
were uploaded) is found by what it should have left, open scans without a score under the
latest model, and sent again by :func:`scores_requeue_missing` with every jobs check."""

from celery import shared_task

from mriannot.jobs import jobs_requeue_hook
from mriannot.queue import task_options

#: A project's missing scores are asked for again at most this often (the scoring's time limit:
#: a scoring queued behind a long training is not sent again and again meanwhile).
SCORES_RESEND_S = 3600


@shared_task(**task_options(time_limit=3 * 3600))
def model_version_train_task(version_id: int) -> None:
    from .services import model_version_train

    model_version_train(version_id=version_id)


@shared_task(**task_options(time_limit=SCORES_RESEND_S))
def scores_update_task(project_id: int) -> None:
    from .services import scores_update

    scores_update(project_id=project_id)


@jobs_requeue_hook
def scores_requeue_missing(*, queued_for_s: float | None = None) -> dict[str, list[int]]:
    """Send the scoring of every project that has an open scan, uploaded more than
    ``MRIANNOT_JOB_SEND_GRACE_S`` ago, without a score under the project's latest model; once
    per ``SCORES_RESEND_S`` a project (every time with ``queued_for_s=0``: the broker was emptied).
    Returns ``{"active_learning.scoring": [project ids]}`` when it sent some."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from labeling.models import Project
    from mriannot.queue import once_per, once_per_reset, task_send

    from .models import ScanScore
    from .selectors import latest_model, open_scans

    uploaded_before = timezone.now() - timedelta(seconds=settings.MRIANNOT_JOB_SEND_GRACE_S)
    sent = []
    for project in Project.objects.order_by("pk"):
        scored = ScanScore.objects.filter(scan__project=project, model_version=latest_model(project=project))
        missing = open_scans(project=project).filter(created_at__lte=uploaded_before)
        if not missing.exclude(pk__in=scored.values("scan_id")).exists():
            continue
        key = f"scores:{project.pk}"
        if queued_for_s != 0 and not once_per(key, SCORES_RESEND_S):
            continue
        if task_send(scores_update_task.name, [project.pk]):
            sent.append(project.pk)
        else:
            once_per_reset(key)
            break  # the broker is down: the next check tries again
    return {"active_learning.scoring": sent} if sent else {}

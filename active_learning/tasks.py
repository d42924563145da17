"""Celery tasks of active learning (queue 'training'): take an id, call one service."""
from celery import shared_task
from django.db import OperationalError

from .services import model_version_train, scores_update


@shared_task(acks_late=True, reject_on_worker_lost=True, autoretry_for=(OperationalError,), max_retries=3,
             retry_backoff=True, time_limit=3 * 3600, soft_time_limit=3 * 3600 - 60)
def model_version_train_task(version_id: int) -> None:
    model_version_train(version_id=version_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, autoretry_for=(OperationalError,), max_retries=3,
             retry_backoff=True, time_limit=3600, soft_time_limit=3500)
def scores_update_task(project_id: int) -> None:
    scores_update(project_id=project_id)

"""Celery tasks of active learning (queue 'training'): take an id, call one service."""

from celery import shared_task

from mriannot.queue import task_options

from .services import model_version_train, scores_update


@shared_task(**task_options(time_limit=3 * 3600))
def model_version_train_task(version_id: int) -> None:
    model_version_train(version_id=version_id)


@shared_task(**task_options(time_limit=3600))
def scores_update_task(project_id: int) -> None:
    scores_update(project_id=project_id)

"""Celery tasks of active learning (queue 'training'): each takes an id and calls one service
(imported when it runs, so that services can import their tasks to queue them)."""

from celery import shared_task

from mriannot.queue import task_options


@shared_task(**task_options(time_limit=3 * 3600))
def model_version_train_task(version_id: int) -> None:
    from .services import model_version_train

    model_version_train(version_id=version_id)


@shared_task(**task_options(time_limit=3600))
def scores_update_task(project_id: int) -> None:
    from .services import scores_update

    scores_update(project_id=project_id)

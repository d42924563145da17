"""Celery tasks of labeling: each takes an id and calls one service (imported when it runs, so
that services can import their tasks to queue them)."""

from celery import shared_task

from mriannot.queue import task_options


@shared_task(**task_options(time_limit=3600))
def dicom_import_execute_task(import_id: int) -> None:
    from .dicom_imports import dicom_import_execute

    dicom_import_execute(import_id=import_id)

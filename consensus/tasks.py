"""Celery tasks of consensus: take an id, call one service."""

from celery import shared_task

from mriannot.queue import task_options

from .services import consensus_run_execute, export_execute


@shared_task(**task_options(time_limit=1800))
def consensus_run_execute_task(run_id: int) -> None:
    consensus_run_execute(run_id=run_id)


@shared_task(**task_options(time_limit=3600))
def export_execute_task(export_id: int) -> None:
    export_execute(export_id=export_id)

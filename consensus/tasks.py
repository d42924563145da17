"""Celery tasks of consensus: each takes an id and calls one service (imported when it runs, so
that services can import their tasks to queue them)."""

from celery import shared_task

from mriannot.queue import task_options


@shared_task(**task_options(time_limit=1800))
def consensus_run_execute_task(run_id: int) -> None:
    from .services import consensus_run_execute

    consensus_run_execute(run_id=run_id)


@shared_task(**task_options(time_limit=3600))
def export_execute_task(export_id: int) -> None:
    from .services import export_execute

    export_execute(export_id=export_id)

"""Celery tasks of consensus: take an id, call one service."""
from celery import shared_task
from django.db import OperationalError

from .services import consensus_run_execute, export_execute


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, OSError),
    max_retries=3,
    retry_backoff=True,
    time_limit=1800,
    soft_time_limit=1700,
)
def consensus_run_execute_task(run_id: int) -> None:
    consensus_run_execute(run_id=run_id)


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, OSError),
    max_retries=3,
    retry_backoff=True,
    time_limit=3600,
    soft_time_limit=3500,
)
def export_execute_task(export_id: int) -> None:
    export_execute(export_id=export_id)

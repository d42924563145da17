"""Reads for consensus. Only leads and admins of a project see consensus results (blinding)."""
from __future__ import annotations

from django.db.models import QuerySet

from labeling.models import Scan, ScanStatus
from labeling.selectors import managed_project_ids, user_is_site_admin

from .models import ConsensusRun, RunStatus


def run_list(*, user) -> QuerySet[ConsensusRun]:
    qs = ConsensusRun.objects.select_related("scan", "scan__project")
    if user_is_site_admin(user):
        return qs
    return qs.filter(scan__project_id__in=managed_project_ids(user=user))


def latest_done_run(*, scan: Scan) -> ConsensusRun | None:
    return scan.consensus_runs.filter(status=RunStatus.DONE).order_by("-finished_at", "-id").first()


def flagged_scans(*, project) -> QuerySet[Scan]:
    """Scans waiting for adjudication, most ambiguous first."""
    return Scan.objects.filter(project=project, status=ScanStatus.FLAGGED).order_by("id")

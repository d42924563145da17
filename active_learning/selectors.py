"""Reads of active learning: the open scans, the latest model, the ranking as annotators see it,
pre-labels, editing effort."""

from __future__ import annotations

from labeling.models import Assignment, Project, Scan, ScanStatus
from mriannot.jobs import JobStatus

from .models import EditingEffort, ModelVersion, ScanScore


def open_scans(*, project: Project):
    """Scans not yet fully labelled: ranking them is what saves radiologist time."""
    return Scan.objects.filter(project=project, status__in=[ScanStatus.NEW, ScanStatus.IN_PROGRESS]).order_by("id")


def latest_model(*, project: Project) -> ModelVersion | None:
    return project.model_versions.filter(status=JobStatus.DONE).order_by("-version").first()


def ranking(*, project: Project) -> tuple[ModelVersion | None, list[dict]]:
    """The open scans in the order annotators will see them, with their scores under the latest
    model (unscored scans last)."""
    model = latest_model(project=project)
    scores = {s.scan_id: s for s in ScanScore.objects.filter(scan__project=project, model_version=model)}
    rows = []
    for scan in open_scans(project=project):
        score = scores.get(scan.pk)
        rows.append(
            {
                "scan": scan.pk,
                "subject_id": scan.subject_id,
                "status": scan.status,
                "score": score.score if score else None,
                "entropy": score.entropy if score else None,
                "bald": score.bald if score else None,
                "disagreement": score.disagreement if score else None,
                "strategy": score.strategy if score else None,
            }
        )
    rows.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0)))
    return model, rows


def prelabel_for(*, assignment: Assignment) -> ScanScore | None:
    """The newest pre-label of the assignment's scan, when the project offers pre-labels."""
    if not assignment.scan.project.al_offer_prelabels:
        return None
    return (
        ScanScore.objects.filter(scan=assignment.scan, model_version__isnull=False)
        .exclude(prelabel="")
        .select_related("model_version")
        .order_by("-model_version__version")
        .first()
    )


def editing_effort_list(*, project: Project) -> list[dict]:
    """How much each annotator changed the pre-labels they started from."""
    rows = EditingEffort.objects.filter(assignment__scan__project=project).select_related(
        "assignment__annotator", "model_version"
    )
    return [
        {
            "assignment": e.assignment_id,
            "scan": e.assignment.scan_id,
            "annotator": e.assignment.annotator.username,
            "model_version": e.model_version.version if e.model_version else None,
            "dice": e.dice,
            "mean_dice": e.mean_dice,
        }
        for e in rows
    ]

"""The demo project: a small cohort SIMULATED from the MNI152 2009a template, with simulated raters.

Everything goes through the same services as real uploads and saves (the NIfTI door
validates every volume), so the demo exercises the real code paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

import simulation

from . import services, volumes
from .models import Assignment, Project, RevisionSource, Role, Split

User = get_user_model()

DEMO_PASSWORD = "mriannot"
DEMO_PROJECT = "Demo: simulated brain MRI (MNI152)"
RATERS = {  # username -> simulated rater profile
    "rater1": "expert",
    "rater2": "generous",
    "rater3": "sloppy",
    "rater4": "conservative",
}
DESCRIPTION = (
    "SIMULATED cohort: every scan is derived from the MNI152 2009a template shipped with nilearn "
    "(smooth random deformations, intensity and bias-field changes, simulated lesions), each as a "
    "T1w and a FLAIR image of the same simulated subject, and the "
    "rater labels on the first scans are simulated raters of differing quality (expert, generous, "
    "sloppy, conservative). No real patient data."
)


@dataclass(frozen=True)
class DemoSummary:
    project: Project
    scans: int
    fully_rated: int


def _user(username: str, **extra) -> User:
    user, created = User.objects.get_or_create(username=username, defaults=extra)
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save()
    return user


def _split(index: int, n: int) -> str:
    fraction = index / max(n, 1)
    if fraction < 0.6:
        return Split.TRAIN
    if fraction < 0.8:
        return Split.VALIDATION
    return Split.TEST


def demo_project_create(*, n_scans: int = 10, n_rated: int = 4, resolution: int = 2, seed: int = 2026) -> DemoSummary:
    """Build the demo project: users of each role, a simulated cohort, simulated rater revisions.

    The first ``n_rated`` scans are labelled and submitted by all their raters (so consensus
    and agreement have something to show); the next scan has one saved, unsubmitted revision.
    """
    admin = _user("admin", is_staff=True, is_superuser=True)
    lead = _user("lead")
    raters = [_user(name) for name in RATERS]
    with transaction.atomic():
        project = services.project_create(
            actor=lead,
            name=DEMO_PROJECT,
            description=DESCRIPTION,
            raters_per_scan=3,
            labels=[
                {"value": value, "name": name, "color": color}
                for value, (name, color) in simulation.LABELS.items()
                if value != 0
            ],
            is_simulated=True,
            channels=["T1w", "FLAIR"],
        )
        services.membership_set(project=project, actor=lead, user=admin, role=Role.ADMIN)
        for rater in raters:
            services.membership_set(project=project, actor=lead, user=rater, role=Role.ANNOTATOR)

    anatomy = simulation.mni152_anatomy(resolution=resolution)
    scans = []
    for index in range(n_scans):
        subject = simulation.simulate_subject(anatomy, seed=seed + index)
        scan = services.scan_create(
            project=project,
            actor=lead,
            raw=volumes.image_to_bytes(subject.image, subject.affine),
            filename=f"sub-{index + 1:03d}_T1w.nii.gz",
            subject_id=f"{index + 1:03d}",
            session_id="01",
            split=_split(index, n_scans),
        )
        flair = simulation.simulate_subject(anatomy, seed=seed + index, contrast="FLAIR")
        services.scan_channel_add(
            scan=scan, actor=lead, raw=volumes.image_to_bytes(flair.image, flair.affine), role="FLAIR"
        )
        scans.append((scan, subject))

    for index, (scan, subject) in enumerate(scans[: n_rated + 1]):
        submit = index < n_rated
        assignments = list(Assignment.objects.filter(scan=scan).select_related("annotator").order_by("id"))
        if not submit:
            assignments = assignments[:1]
        for assignment in assignments:
            profile = RATERS[assignment.annotator.username]
            labels = simulation.simulate_rater(
                subject.labels, profile=profile, seed=seed * 1000 + scan.pk * 10 + assignment.pk
            )
            _revision, _ = services.revision_create(
                assignment=assignment,
                actor=assignment.annotator,
                raw=volumes.label_map_to_bytes(labels, subject.affine),
                base_revision_id=None,
                source=RevisionSource.SIMULATED,
            )
            if submit:
                services.assignment_submit(assignment=assignment, actor=assignment.annotator)
    return DemoSummary(project=project, scans=len(scans), fully_rated=n_rated)

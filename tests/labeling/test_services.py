"""Labeling services: assignment balancing, immutable history, submission, audit trail."""

from __future__ import annotations

import numpy as np
import pytest

from labeling import services
from labeling.models import AnnotationRevision, Assignment, AssignmentStatus, AuditEvent, Role, ScanStatus
from labeling.signals import scan_fully_submitted
from mriannot.errors import Conflict, NotAllowed
from tests import factories

pytestmark = pytest.mark.django_db


def _labels(values=(1, 2)) -> bytes:
    return factories.nifti_bytes(factories.label_array(values=values), factories.AFFINE)


def test_each_scan_gets_distinct_raters_balanced_by_load(world):
    scans = [factories.add_scan(world, seed=i) for i in range(3)]  # 3 scans x 2 raters over 3 annotators
    for scan in scans:
        raters = list(scan.assignments.values_list("annotator_id", flat=True))
        assert len(raters) == len(set(raters)) == 2
    loads = sorted(Assignment.objects.filter(annotator__in=world.annotators).values_list("annotator_id", flat=True))
    counts = np.bincount(loads)[[u.pk for u in world.annotators]]
    assert counts.max() - counts.min() <= 1  # 6 assignments over 3 annotators: 2 each


def test_new_annotator_fills_scans_that_lack_raters(world):
    world.project.raters_per_scan = 4
    world.project.save()
    scan = factories.add_scan(world)
    assert scan.assignments.count() == 3  # only 3 annotators exist
    newcomer = factories.UserFactory(username="newcomer")
    services.membership_set(project=world.project, actor=world.lead, user=newcomer, role=Role.ANNOTATOR)
    assert scan.assignments.filter(annotator=newcomer).exists()


def test_revisions_are_immutable(world):
    scan = factories.add_scan(world)
    assignment = scan.assignments.first()
    revision, created = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=_labels(), base_revision_id=None
    )
    assert created and revision.number == 1 and revision.label_counts == {"0": 912, "1": 24, "2": 24}
    revision.source = "upload"
    with pytest.raises(RuntimeError, match="immutable"):
        revision.save()
    with pytest.raises(RuntimeError, match="never deleted"):
        revision.delete()
    event = AuditEvent.objects.filter(action="revision.save").get()
    with pytest.raises(RuntimeError):
        event.delete()


def test_revision_chain_names_its_base(world):
    scan = factories.add_scan(world)
    assignment = scan.assignments.first()
    first, _ = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=_labels(), base_revision_id=None
    )
    second, _ = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=_labels((2, 3)), base_revision_id=first.pk
    )
    assert (second.number, second.base_id) == (2, first.pk)
    assert second.file.name != first.file.name
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.IN_PROGRESS
    scan.refresh_from_db()
    assert scan.status == ScanStatus.IN_PROGRESS


def test_only_the_assigned_annotator_saves(world):
    scan = factories.add_scan(world)
    assignment = scan.assignments.first()
    with pytest.raises(NotAllowed):
        services.revision_create(assignment=assignment, actor=world.lead, raw=_labels(), base_revision_id=None)
    assert not AnnotationRevision.objects.exists()


def test_last_submission_marks_the_scan_and_sends_the_signal(world):
    received = []

    def receiver(sender, scan, actor, **kwargs):
        received.append((scan.pk, actor.pk))

    scan_fully_submitted.connect(receiver)
    try:
        scan = factories.add_scan(world)
        assignments = list(scan.assignments.order_by("id"))
        for i, assignment in enumerate(assignments):
            services.revision_create(
                assignment=assignment, actor=assignment.annotator, raw=_labels(), base_revision_id=None
            )
            services.assignment_submit(assignment=assignment, actor=assignment.annotator)
            scan.refresh_from_db()
            expected = ScanStatus.SUBMITTED if i == len(assignments) - 1 else ScanStatus.IN_PROGRESS
            assert scan.status == expected
    finally:
        scan_fully_submitted.disconnect(receiver)
    assert received == [(scan.pk, assignments[-1].annotator_id)]


def test_submit_without_a_revision_is_refused(world):
    scan = factories.add_scan(world)
    assignment = scan.assignments.first()
    with pytest.raises(Conflict, match="save your labels"):
        services.assignment_submit(assignment=assignment, actor=assignment.annotator)


def test_last_lead_cannot_be_demoted(world):
    membership = world.project.memberships.get(user=world.lead)
    with pytest.raises(Conflict, match="last lead"):
        services.membership_set(project=world.project, actor=world.lead, user=world.lead, role=Role.ANNOTATOR)
    membership.refresh_from_db()
    assert membership.role == Role.LEAD


def test_labels_cannot_be_deleted_once_labels_are_saved(world):
    """Before the first save any label may go; after it none (values are fixed: see test_console_apis)."""
    services.label_class_delete(label=world.project.label_classes.get(value=3), actor=world.lead)
    scan = factories.add_scan(world)
    assignment = scan.assignments.first()
    services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=_labels((2,)), base_revision_id=None
    )
    for value in (1, 2):  # drawn or not
        with pytest.raises(Conflict, match="values are fixed"):
            services.label_class_delete(label=world.project.label_classes.get(value=value), actor=world.lead)
    assert sorted(world.project.label_classes.values_list("value", flat=True)) == [1, 2]


def test_audit_trail_records_who_did_what(world):
    scan = factories.add_scan(world)
    actions = list(AuditEvent.objects.filter(project=world.project).values_list("action", "actor__username"))
    assert ("project.create", "lead") in actions
    assert ("scan.upload", "lead") in actions
    assert sum(1 for action, _ in actions if action == "member.add") == 3
    assert (
        AuditEvent.objects.filter(
            action="assignment.create", target_id__in=[str(pk) for pk in scan.assignments.values_list("pk", flat=True)]
        ).count()
        == 2
    )


def test_scan_is_stored_reoriented_to_ras(world):
    lps = np.diag([-2.0, -2.0, 2.0, 1.0])
    scan = factories.add_scan(world, affine=lps)
    assert scan.orientation == "LPS"
    assert np.allclose(np.diag(np.array(scan.affine))[:3], [2.0, 2.0, 2.0])


def test_canonical_upload_is_stored_as_sent_and_any_other_form_is_rewritten(world):
    from labeling import volumes

    scan = factories.add_scan(world)
    assignment = scan.assignments.first()
    labels = factories.label_array(values=(1, 2))
    canonical = volumes.label_map_to_bytes(labels, np.array(scan.affine))  # what the viewer sends
    first, _ = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=canonical, base_revision_id=None
    )
    with first.file.open("rb") as fh:
        assert fh.read() == canonical

    # The same labels stored flipped to LAS (another tool's habit): accepted, stored canonical.
    las = np.array(scan.affine, dtype=float) @ np.array(
        [[-1, 0, 0, labels.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float
    )
    flipped = volumes.label_map_to_bytes(labels[::-1], las)
    assert not volumes.storable_as_sent(flipped)
    second, _ = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=flipped, base_revision_id=first.pk
    )
    with second.file.open("rb") as fh:
        stored = fh.read()
    assert stored != flipped
    back, affine = volumes.read_array(stored)
    assert np.array_equal(back, labels) and np.allclose(affine, np.array(scan.affine))
    assert second.label_counts == first.label_counts

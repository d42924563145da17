"""Writes and orchestration for labeling: projects, members, scans, assignments, revisions.

Every function here is keyword-only, runs in one transaction, writes an audit event, and
raises a :mod:`mriannot.errors` error with a message for people when it refuses.
Files are written before their row is committed and removed again if the row is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from contextlib import contextmanager

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from mriannot.errors import Conflict, NotAllowed, TooLarge, ValidationFailed
from mriannot.storage import file_delete, file_write

from . import volumes
from .models import (
    AnnotationRevision,
    Assignment,
    AssignmentStatus,
    AuditEvent,
    LabelClass,
    Membership,
    Project,
    RevisionSource,
    Role,
    Scan,
    ScanStatus,
    revision_path,
)
from .selectors import annotator_load, assignment_head, label_values
from .signals import assignment_submitted, scan_fully_submitted, scans_added

User = get_user_model()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def audit_log(*, actor, project: Project | None, action: str, target, data: dict | None = None) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        project=project,
        action=action,
        target_type=type(target).__name__.lower(),
        target_id=str(target.pk),
        data=data or {},
    )


@contextmanager
def stored_file(name: str, data: bytes, *, shared: bool = False):
    """Write ``data`` to storage at ``name`` for the duration of a transaction block.

    The file is written whole and verified, or not at all (:func:`mriannot.storage.file_write`).
    If the block raises, a file this call created is removed again, so no upload stays behind
    without its row. ``shared=True`` is for content-addressed files: an existing file of the
    same name is reused if it holds exactly ``data`` (and replaced if it does not), and never
    removed.
    """
    stored = file_write(name=name, data=data, reuse=shared)
    try:
        yield stored.name
    except BaseException:
        if stored.created:
            file_delete(name=stored.name)
        raise


def _check_upload_size(raw: bytes) -> None:
    if len(raw) > settings.MRIANNOT_MAX_UPLOAD_BYTES:
        raise TooLarge(
            f"The upload is {len(raw)} bytes; the limit is {settings.MRIANNOT_MAX_UPLOAD_BYTES} bytes "
            "(MRIANNOT_MAX_UPLOAD_BYTES). Compress it as .nii.gz or ask an admin to raise the limit.",
        )


# --- projects, label schema, members ---------------------------------------------------------


@transaction.atomic
def project_create(
    *,
    actor,
    name: str,
    description: str = "",
    raters_per_scan: int = 3,
    ambiguity_threshold: float = 0.05,
    flag_min_label_dice: float | None = 0.5,
    flag_max_volume_spread: float | None = 0.5,
    flag_max_rater_gap: float | None = 0.25,
    al_strategy: str = "entropy",
    labels: Iterable[dict] = (),
    is_simulated: bool = False,
) -> Project:
    """Create a project; its creator becomes its lead."""
    if Project.objects.filter(name=name).exists():
        raise Conflict(f"A project named {name!r} already exists; choose another name.", code="duplicate_name")
    project = Project.objects.create(
        name=name,
        description=description,
        raters_per_scan=raters_per_scan,
        ambiguity_threshold=ambiguity_threshold,
        flag_min_label_dice=flag_min_label_dice,
        flag_max_volume_spread=flag_max_volume_spread,
        flag_max_rater_gap=flag_max_rater_gap,
        al_strategy=al_strategy,
        is_simulated=is_simulated,
        created_by=actor,
    )
    Membership.objects.create(project=project, user=actor, role=Role.LEAD)
    for label in labels:
        label_class_create(project=project, actor=actor, **label)
    audit_log(actor=actor, project=project, action="project.create", target=project, data={"name": name})
    return project


@transaction.atomic
def project_update(*, project: Project, actor, **fields) -> Project:
    allowed = {
        "name",
        "description",
        "raters_per_scan",
        "ambiguity_threshold",
        "al_strategy",
        "al_retrain_every",
        "al_offer_prelabels",
        "flag_min_label_dice",
        "flag_max_volume_spread",
        "flag_max_rater_gap",
    }
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationFailed(f"These fields cannot be changed: {sorted(unknown)}.")
    if "name" in fields and Project.objects.filter(name=fields["name"]).exclude(pk=project.pk).exists():
        raise Conflict(f"A project named {fields['name']!r} already exists.", code="duplicate_name")
    for key, value in fields.items():
        setattr(project, key, value)
    project.save(update_fields=list(fields))
    audit_log(actor=actor, project=project, action="project.update", target=project, data=fields)
    if "raters_per_scan" in fields:
        assignments_balance(project=project, actor=actor)
    return project


def _label_value_in_use(*, project: Project, value: int) -> bool:
    key = str(value)
    for counts in AnnotationRevision.objects.filter(assignment__scan__project=project).values_list(
        "label_counts", flat=True
    ):
        if counts.get(key, 0) > 0:
            return True
    return False


@transaction.atomic
def label_class_create(*, project: Project, actor, value: int, name: str, color: str) -> LabelClass:
    if value == 0:
        raise ValidationFailed("Value 0 is background and is always part of the schema; use 1 to 255.")
    if LabelClass.objects.filter(project=project, value=value).exists():
        raise Conflict(f"Label value {value} is already used in this project.", code="duplicate_label")
    if LabelClass.objects.filter(project=project, name=name).exists():
        raise Conflict(f"A label named {name!r} already exists in this project.", code="duplicate_label")
    label = LabelClass.objects.create(project=project, value=value, name=name, color=color)
    audit_log(actor=actor, project=project, action="label.create", target=label, data={"value": value, "name": name})
    return label


@transaction.atomic
def label_class_update(*, label: LabelClass, actor, name: str | None = None, color: str | None = None) -> LabelClass:
    changes = {k: v for k, v in {"name": name, "color": color}.items() if v is not None}
    if "name" in changes and LabelClass.objects.filter(project=label.project, name=name).exclude(pk=label.pk).exists():
        raise Conflict(f"A label named {name!r} already exists in this project.", code="duplicate_label")
    for key, value in changes.items():
        setattr(label, key, value)
    label.save()
    audit_log(actor=actor, project=label.project, action="label.update", target=label, data=changes)
    return label


@transaction.atomic
def label_class_delete(*, label: LabelClass, actor) -> None:
    if _label_value_in_use(project=label.project, value=label.value):
        raise Conflict(
            f"Label {label.value} ({label.name}) is drawn in saved revisions and cannot be removed; rename it instead.",
            code="label_in_use",
        )
    audit_log(actor=actor, project=label.project, action="label.delete", target=label, data={"value": label.value})
    label.delete()


@transaction.atomic
def membership_set(*, project: Project, actor, user, role: str) -> Membership:
    """Give ``user`` a role in the project (create or change), then balance assignments."""
    if role not in Role.values:
        raise ValidationFailed(f"Unknown role {role!r}; use one of {Role.values}.")
    membership, created = Membership.objects.get_or_create(project=project, user=user, defaults={"role": role})
    old_role = None if created else membership.role
    if not created and old_role != role:
        if old_role in (Role.LEAD, Role.ADMIN) and role == Role.ANNOTATOR:
            _ensure_another_manager(project=project, leaving=user)
        membership.role = role
        membership.save(update_fields=["role"])
    audit_log(
        actor=actor,
        project=project,
        action="member.add" if created else "member.role_change",
        target=membership,
        data={"user": user.username, "role": role, "previous_role": old_role},
    )
    assignments_balance(project=project, actor=actor)
    return membership


def _ensure_another_manager(*, project: Project, leaving) -> None:
    others = Membership.objects.filter(project=project, role__in=(Role.LEAD, Role.ADMIN)).exclude(user=leaving)
    if not others.exists():
        raise Conflict("This is the project's last lead; make someone else lead first.", code="last_lead")


@transaction.atomic
def membership_remove(*, membership: Membership, actor) -> None:
    if membership.role in (Role.LEAD, Role.ADMIN):
        _ensure_another_manager(project=membership.project, leaving=membership.user)
    if Assignment.objects.filter(scan__project=membership.project, annotator=membership.user).exists():
        raise Conflict(
            f"{membership.user.username} has assignments in this project (their revisions are kept forever); "
            "change their role instead of removing them.",
            code="member_has_work",
        )
    audit_log(
        actor=actor,
        project=membership.project,
        action="member.remove",
        target=membership,
        data={"user": membership.user.username},
    )
    membership.delete()


# --- scans and assignments ---------------------------------------------------------------------


def scan_create(
    *,
    project: Project,
    actor,
    raw: bytes,
    filename: str = "",
    subject_id: str = "",
    session_id: str = "",
    split: str = "unassigned",
) -> Scan:
    """Validate and store a NIfTI image (reoriented to RAS+), then assign its raters."""
    _check_upload_size(raw)
    volume = volumes.load_image(raw, max_decompressed_bytes=settings.MRIANNOT_MAX_DECOMPRESSED_BYTES)
    digest = sha256_hex(raw)
    existing = Scan.objects.filter(project=project, sha256=digest).first()
    if existing is not None:
        raise Conflict(
            f"This image is already scan {existing.pk} of the project (same sha256).",
            code="duplicate_scan",
            extra={"scan": existing.pk},
        )
    with transaction.atomic(), stored_file(f"scans/{digest}.nii.gz", volume.nifti_bytes, shared=True) as name:
        try:
            scan = Scan.objects.create(
                project=project,
                sha256=digest,
                image=name,
                original_filename=filename[:255],
                shape=list(volume.shape),
                spacing=[float(s) for s in volume.spacing],
                affine=[[float(v) for v in row] for row in volume.affine],
                orientation=volume.orientation,
                subject_id=subject_id,
                session_id=session_id,
                split=split,
                uploaded_by=actor,
            )
        except IntegrityError:  # a concurrent upload of the same file won
            raise Conflict(
                "This image was just uploaded to the project by someone else.", code="duplicate_scan"
            ) from None
        audit_log(
            actor=actor,
            project=project,
            action="scan.upload",
            target=scan,
            data={"sha256": digest, "filename": filename, "shape": scan.shape, "orientation": volume.orientation},
        )
        assignments_balance(project=project, actor=actor, scans=[scan])
        scans_added.send(sender=Scan, project=project, scans=[scan])
    return scan


def assignments_balance(*, project: Project, actor=None, scans: Iterable[Scan] | None = None) -> list[Assignment]:
    """Give every scan up to ``raters_per_scan`` distinct annotators, least-loaded first.

    Scans that already have enough raters are left alone; ties in load go to the
    annotator with the lower id, so the result is deterministic.
    """
    annotators = list(
        User.objects.filter(memberships__project=project, memberships__role=Role.ANNOTATOR, is_active=True)
        .order_by("id")
        .values_list("id", flat=True)
    )
    if not annotators:
        return []
    load = {uid: 0 for uid in annotators}
    load.update({uid: n for uid, n in annotator_load(project=project).items() if uid in load})
    if scans is None:
        scans = (
            Scan.objects.filter(project=project)
            .annotate(n=Count("assignments"))
            .filter(n__lt=project.raters_per_scan)
            .order_by("id")
        )
    created: list[Assignment] = []
    for scan in scans:
        have = set(scan.assignments.values_list("annotator_id", flat=True))
        missing = project.raters_per_scan - len(have)
        candidates = sorted((uid for uid in annotators if uid not in have), key=lambda uid: (load[uid], uid))
        for uid in candidates[: max(missing, 0)]:
            assignment = Assignment.objects.create(scan=scan, annotator_id=uid)
            load[uid] += 1
            created.append(assignment)
            audit_log(
                actor=actor, project=project, action="assignment.create", target=assignment, data={"annotator": uid}
            )
    return created


# --- revisions and submission ------------------------------------------------------------------


def revision_create(
    *,
    assignment: Assignment,
    actor,
    raw: bytes,
    base_revision_id: int | None,
    source: str = RevisionSource.MANUAL,
) -> tuple[AnnotationRevision, bool]:
    """Save a new immutable revision of an assignment's labels.

    Returns ``(revision, created)``. A save whose base is not the current head is refused
    with 409 and the current head's id. Sending the same labels on the same base again
    (a client retrying after a lost response) returns the existing revision instead of
    a duplicate.
    """
    if assignment.annotator_id != actor.pk:
        raise NotAllowed("Only the assigned annotator can save labels on this assignment.")
    if source not in RevisionSource.values:
        raise ValidationFailed(f"Unknown source {source!r}; use one of {RevisionSource.values}.")
    _check_upload_size(raw)
    scan = assignment.scan
    labels = volumes.load_label_map(
        raw,
        reference_shape=tuple(scan.shape),
        reference_affine=scan.affine,
        allowed_values=label_values(project=scan.project),
        max_decompressed_bytes=settings.MRIANNOT_MAX_DECOMPRESSED_BYTES,
    )
    # A viewer that loaded our canonical scan sends the canonical form already: keep it.
    data = raw if volumes.storable_as_sent(raw) else volumes.label_map_to_bytes(labels, scan.affine)
    digest = sha256_hex(data)

    with transaction.atomic():
        locked = Assignment.objects.select_for_update().get(pk=assignment.pk)
        if locked.status == AssignmentStatus.SUBMITTED:
            raise Conflict("This assignment is submitted and frozen; it takes no more saves.", code="submitted")
        head = assignment_head(assignment=locked)
        head_id = head.pk if head else None
        if base_revision_id != head_id:
            if head is not None and head.sha256 == digest and head.base_id == base_revision_id:
                return head, False  # a retried save that already landed
            based_on = f"revision {base_revision_id}" if base_revision_id is not None else "no revision (a first save)"
            raise Conflict(
                f"Your labels are based on {based_on}, but the latest revision is {head_id}. "
                "Reload the latest revision, or save yours again based on it to keep your version.",
                code="stale_revision",
                extra={"current_revision": head_id},
            )
        revision = AnnotationRevision(
            assignment=locked,
            number=(head.number + 1) if head else 1,
            base=head,
            sha256=digest,
            label_counts=label_counts(labels),
            source=source,
            created_by=actor,
        )
        with stored_file(revision_path(scan.pk, revision.uid), data) as name:
            revision.file.name = name
            revision.save()
            if locked.status == AssignmentStatus.TODO:
                locked.status = AssignmentStatus.IN_PROGRESS
                locked.save(update_fields=["status"])
            Scan.objects.filter(pk=scan.pk, status=ScanStatus.NEW).update(status=ScanStatus.IN_PROGRESS)
            audit_log(
                actor=actor,
                project=scan.project,
                action="revision.save",
                target=revision,
                data={"assignment": locked.pk, "number": revision.number, "base": head_id, "source": source},
            )
    assignment.status = locked.status
    return revision, True


def label_counts(labels) -> dict[str, int]:
    """Voxels per label value present in a label map, as {"value": count}."""
    import numpy as np

    counts = volumes.value_counts(np.asarray(labels, dtype=np.uint8))
    return {str(int(v)): int(counts[v]) for v in np.flatnonzero(counts)}


@transaction.atomic
def assignment_submit(*, assignment: Assignment, actor, revision_id: int | None = None) -> Assignment:
    """Submit the assignment's latest revision and freeze it.

    When this brings the scan to ``raters_per_scan`` submitted raters, the scan becomes
    'submitted' and :data:`labeling.signals.scan_fully_submitted` is sent.
    """
    if assignment.annotator_id != actor.pk:
        raise NotAllowed("Only the assigned annotator can submit this assignment.")
    locked = Assignment.objects.select_for_update().select_related("scan", "scan__project").get(pk=assignment.pk)
    if locked.status == AssignmentStatus.SUBMITTED:
        raise Conflict("This assignment is already submitted.", code="submitted")
    head = assignment_head(assignment=locked)
    if head is None:
        raise Conflict("Nothing to submit: save your labels at least once first.", code="no_revision")
    if revision_id is not None and revision_id != head.pk:
        raise Conflict(
            f"Revision {revision_id} is not the latest ({head.pk}); submit the latest revision.",
            code="stale_revision",
            extra={"current_revision": head.pk},
        )
    locked.status = AssignmentStatus.SUBMITTED
    locked.submitted_at = timezone.now()
    locked.save(update_fields=["status", "submitted_at"])
    scan = locked.scan
    audit_log(actor=actor, project=scan.project, action="assignment.submit", target=locked, data={"revision": head.pk})
    assignment_submitted.send(sender=Assignment, assignment=locked, revision=head)
    submitted = scan.assignments.filter(status=AssignmentStatus.SUBMITTED).count()
    if submitted >= scan.project.raters_per_scan and scan.status in (ScanStatus.NEW, ScanStatus.IN_PROGRESS):
        scan.status = ScanStatus.SUBMITTED
        scan.save(update_fields=["status"])
        scan_fully_submitted.send(sender=Scan, scan=scan, actor=actor)
    return locked

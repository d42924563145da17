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
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from mriannot.errors import (
    Conflict,
    NotAllowed,
    ServiceError,
    StorageUnavailable,
    TooLarge,
    ValidationFailed,
    storage_fault,
)
from mriannot.fields import TEXT_MAX_CHARS
from mriannot.refusals import InputRefused
from mriannot.storage import file_delete, file_write

from . import archives, channels, volumes
from . import metadata as scan_metadata
from .models import (
    AnnotationRevision,
    Assignment,
    AssignmentStatus,
    AuditEvent,
    Comment,
    CommentKind,
    LabelClass,
    Membership,
    PrelabelPolicy,
    Project,
    RevisionSource,
    Role,
    Scan,
    ScanChannel,
    ScanStatus,
    Split,
    revision_path,
)
from .selectors import (
    annotator_load,
    assignment_head,
    invalidated_versions,
    label_values,
    metadata_csv_preview,
    project_channel_roles,
    project_has_revisions,
    project_role,
    scan_split_usage,
    split_plan,
    user_manages_project,
)
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


@contextmanager
def _maybe_stored(name: str, data: bytes | None):
    """:func:`stored_file` when there is ``data``; the empty name otherwise."""
    if data is None:
        yield ""
        return
    with stored_file(name, data) as stored:
        yield stored


def label_map_for_scan(*, scan: Scan, raw: bytes):
    """Decode ``raw`` as a label map of ``scan``: its grid, the project's label values, the size limit."""
    return volumes.load_label_map(
        raw,
        reference_shape=tuple(scan.shape),
        reference_affine=scan.affine,
        allowed_values=label_values(project=scan.project),
        max_decompressed_bytes=settings.MRIANNOT_MAX_DECOMPRESSED_BYTES,
    )


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
    al_retrain_every: int = 5,
    prelabel_policy: str | None = None,
    labels: Iterable[dict] = (),
    is_simulated: bool = False,
    channels: Iterable[str] = (),
) -> Project:
    """Create a project; its creator becomes its lead.

    Without a ``prelabel_policy``, the default follows ``raters_per_scan``
    (:func:`default_prelabel_policy`).
    """
    if prelabel_policy is None:
        prelabel_policy = default_prelabel_policy(raters_per_scan=raters_per_scan)
    _check_prelabel_policy(prelabel_policy)
    if Project.objects.filter(name=name).exists():
        raise Conflict(f"A project named {name!r} already exists; choose another name.", code="duplicate_name")
    channels = _checked_channels(project=Project(), channels=list(channels))
    project = Project.objects.create(
        channels=channels,
        name=name,
        description=description,
        raters_per_scan=raters_per_scan,
        ambiguity_threshold=ambiguity_threshold,
        flag_min_label_dice=flag_min_label_dice,
        flag_max_volume_spread=flag_max_volume_spread,
        flag_max_rater_gap=flag_max_rater_gap,
        al_strategy=al_strategy,
        al_retrain_every=al_retrain_every,
        prelabel_policy=prelabel_policy,
        is_simulated=is_simulated,
        created_by=actor,
    )
    Membership.objects.create(project=project, user=actor, role=Role.LEAD)
    for label in labels:
        label_class_create(project=project, actor=actor, **label)
    audit_log(actor=actor, project=project, action="project.create", target=project, data={"name": name})
    return project


def default_prelabel_policy(*, raters_per_scan: int) -> str:
    """The pre-label policy of a new project: "offered" with two raters or more, else "applied".

    Several raters who all start from the same model drawing are no longer independent: their
    errors follow the model's, and the consensus (and the agreement figures) would measure the
    model rather than the raters. So with a panel the rater chooses; a single rater gains the
    model's head start with nothing to bias.
    """
    return PrelabelPolicy.OFFERED if raters_per_scan >= 2 else PrelabelPolicy.APPLIED


def _check_prelabel_policy(policy: str) -> None:
    if policy not in PrelabelPolicy.values:
        raise ValidationFailed(
            f"Unknown pre-label policy {policy!r}; use one of {PrelabelPolicy.values}.", code="invalid_policy"
        )


@transaction.atomic
def project_update(*, project: Project, actor, **fields) -> Project:
    """Change a project's settings; the audit event names the fields that changed, old and new.

    A change that changes nothing writes no event.
    """
    allowed = {
        "name",
        "description",
        "raters_per_scan",
        "ambiguity_threshold",
        "al_strategy",
        "al_retrain_every",
        "prelabel_policy",
        "flag_min_label_dice",
        "flag_max_volume_spread",
        "flag_max_rater_gap",
        "channels",
    }
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationFailed(f"These fields cannot be changed: {sorted(unknown)}.")
    if "prelabel_policy" in fields:
        _check_prelabel_policy(fields["prelabel_policy"])
    if "channels" in fields:
        fields["channels"] = _checked_channels(project=project, channels=fields["channels"])
    if "name" in fields and Project.objects.filter(name=fields["name"]).exclude(pk=project.pk).exists():
        raise Conflict(f"A project named {fields['name']!r} already exists.", code="duplicate_name")
    project = Project.objects.select_for_update().get(pk=project.pk)
    previous = {key: getattr(project, key) for key in fields}
    changed = {key: value for key, value in fields.items() if previous[key] != value}
    if not changed:
        return project
    for key, value in changed.items():
        setattr(project, key, value)
    project.save(update_fields=list(changed))
    audit_log(
        actor=actor,
        project=project,
        action="project.update",
        target=project,
        data={**changed, "changed": sorted(changed), "previous": {key: previous[key] for key in changed}},
    )
    if "raters_per_scan" in changed:
        assignments_balance(project=project, actor=actor)
    return project


MAX_CHANNELS = 4


def _checked_channels(*, project: Project, channels) -> list[str]:
    """A project's declared sequences: distinct roles of :data:`labeling.metadata.SEQUENCES`, at most four.

    Once the project has scans, the first role (what the scans' own images are) stays as it is.
    """
    if not isinstance(channels, list) or not all(isinstance(role, str) for role in channels):
        raise ValidationFailed('channels: a list of sequence names, for example ["T1w", "FLAIR"].', code="invalid")
    unknown = [role for role in channels if role not in scan_metadata.SEQUENCES]
    if unknown:
        raise ValidationFailed(
            f"channels: {', '.join(map(repr, unknown))} is not one of {', '.join(scan_metadata.SEQUENCES)}.",
            code="invalid",
        )
    if len(set(channels)) != len(channels) or len(channels) > MAX_CHANNELS:
        raise ValidationFailed(f"channels: at most {MAX_CHANNELS} sequences, each once.", code="invalid")
    if project.channels and project.scans.exists() and channels[:1] != project.channels[:1]:
        raise ValidationFailed(
            f"channels: the project's scans are {project.channels[0]} images; the first sequence stays "
            f"{project.channels[0]} (add or remove the others).",
            code="reference_channel_locked",
        )
    return channels


def _schema_locked_message(what: str) -> str:
    return (
        f"{what}: raters have saved labels in this project, and a label's value is what their saved "
        "revisions hold, so values are fixed from the first save on. Rename or recolour the label instead, "
        "or add a new label with a new value."
    )


def _free_label_key(*, project: Project) -> int | None:
    taken = set(LabelClass.objects.filter(project=project, key__isnull=False).values_list("key", flat=True))
    return next((k for k in range(1, 10) if k not in taken), None)


def _check_label_key(key: int | None) -> None:
    if key is not None and not 1 <= key <= 9:
        raise ValidationFailed(f"Key {key} is not a number key; use 1 to 9.", code="invalid_key")


@transaction.atomic
def label_class_create(
    *, project: Project, actor, value: int, name: str, color: str, key: int | None = None
) -> LabelClass:
    """Add a label to the schema. Without a ``key``, it gets the lowest free number key (none after 9).

    A value that is taken is refused; values cannot come back once saved labels exist, because a
    label can only be deleted while no revision exists (:func:`label_class_delete`).
    """
    if value == 0:
        raise ValidationFailed("Value 0 is background and is always part of the schema; use 1 to 255.")
    _check_label_key(key)
    if LabelClass.objects.filter(project=project, value=value).exists():
        raise Conflict(f"Label value {value} is already used in this project.", code="duplicate_label")
    if LabelClass.objects.filter(project=project, name=name).exists():
        raise Conflict(f"A label named {name!r} already exists in this project.", code="duplicate_label")
    if key is None:
        key = _free_label_key(project=project)
    elif LabelClass.objects.filter(project=project, key=key).exists():
        raise Conflict(f"Key {key} already picks another label of this project.", code="duplicate_key")
    label = LabelClass.objects.create(project=project, value=value, name=name, color=color, key=key)
    audit_log(
        actor=actor,
        project=project,
        action="label.create",
        target=label,
        data={"value": value, "name": name, "color": color, "key": key},
    )
    return label


@transaction.atomic
def label_class_update(
    *,
    label: LabelClass,
    actor,
    name: str | None = None,
    color: str | None = None,
    key: int | None = None,
    value: int | None = None,
) -> LabelClass:
    """Rename, recolour, rebind or renumber a label (None: unchanged).

    The name and colour may change at any time. The value only while no revision exists in the
    project. A key held by another label is swapped with it (both changes audited).
    """
    label = LabelClass.objects.select_for_update().select_related("project").get(pk=label.pk)
    project = label.project
    _check_label_key(key)
    changes = {
        k: v
        for k, v in {"name": name, "color": color, "key": key, "value": value}.items()
        if v is not None and getattr(label, k) != v
    }
    if not changes:
        return label
    if "value" in changes:
        if not 1 <= value <= 255:
            raise ValidationFailed("Label values are 1 to 255 (0 is background).")
        if project_has_revisions(project=project):
            raise Conflict(_schema_locked_message(f"Label {label.value} cannot become {value}"), code="schema_locked")
        if LabelClass.objects.filter(project=project, value=value).exclude(pk=label.pk).exists():
            raise Conflict(f"Label value {value} is already used in this project.", code="duplicate_label")
    if "name" in changes and LabelClass.objects.filter(project=project, name=name).exclude(pk=label.pk).exists():
        raise Conflict(f"A label named {name!r} already exists in this project.", code="duplicate_label")
    previous = {k: getattr(label, k) for k in changes}
    if "key" in changes:
        holder = LabelClass.objects.filter(project=project, key=key).exclude(pk=label.pk).first()
        if holder is not None:  # swap: the other label takes this label's key (or none)
            holder.key = None
            holder.save(update_fields=["key"])
            label.key = None
            label.save(update_fields=["key"])
            holder.key = previous["key"]
            holder.save(update_fields=["key"])
            audit_log(
                actor=actor,
                project=project,
                action="label.update",
                target=holder,
                data={"key": holder.key, "previous": {"key": key}, "swapped_with": label.value},
            )
    for k, v in changes.items():
        setattr(label, k, v)
    label.save(update_fields=list(changes))
    audit_log(actor=actor, project=project, action="label.update", target=label, data={**changes, "previous": previous})
    return label


@transaction.atomic
def label_class_delete(*, label: LabelClass, actor) -> None:
    """Remove a label from the schema: only while nobody has saved labels in the project."""
    if project_has_revisions(project=label.project):
        raise Conflict(
            _schema_locked_message(f"Label {label.value} ({label.name}) cannot be removed"),
            code="schema_locked",
        )
    audit_log(
        actor=actor,
        project=label.project,
        action="label.delete",
        target=label,
        data={"value": label.value, "name": label.name},
    )
    label.delete()


@transaction.atomic
def membership_set(*, project: Project, actor, user, role: str) -> Membership:
    """Give ``user`` a role in the project (create or change), then balance assignments."""
    if role not in Role.values:
        raise ValidationFailed(f"Unknown role {role!r}; use one of {Role.values}.")
    membership, created = Membership.objects.get_or_create(project=project, user=user, defaults={"role": role})
    old_role = None if created else membership.role
    if not created and old_role != role:
        if old_role in (Role.LEAD, Role.ADMIN) and role not in (Role.LEAD, Role.ADMIN):
            _ensure_another_manager(project=project, leaving=user)
        membership.role = role
        membership.save(update_fields=["role"])
        if old_role == Role.ANNOTATOR:
            # A rater who becomes a lead would see the other raters' labels of the scans they
            # still have open (blinding): those go to the other annotators.
            assignments_hand_over(project=project, user=user, actor=actor, reason="role_change")
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
def membership_remove(*, membership: Membership, actor) -> dict:
    """Take a member out of the project.

    Their submitted work stays (revisions are never deleted). Their open assignments go to the
    least-loaded other annotators (:func:`assignments_hand_over`). Returns what happened to them:
    ``{"reassigned": [(assignment id, username)], "deleted": [assignment id]}``.
    """
    project = membership.project
    if membership.role in (Role.LEAD, Role.ADMIN):
        _ensure_another_manager(project=project, leaving=membership.user)
    handed = assignments_hand_over(project=project, user=membership.user, actor=actor, reason="member_removed")
    audit_log(
        actor=actor,
        project=project,
        action="member.remove",
        target=membership,
        data={
            "user": membership.user.username,
            "role": membership.role,
            "reassigned": [a for a, _ in handed["reassigned"]],
            "deleted": handed["deleted"],
        },
    )
    membership.delete()
    return handed


def _annotator_ids(*, project: Project, exclude: Iterable[int] = ()) -> list[int]:
    """Active annotators of the project (user ids, ascending), without ``exclude``."""
    return list(
        User.objects.filter(memberships__project=project, memberships__role=Role.ANNOTATOR, is_active=True)
        .exclude(pk__in=list(exclude))
        .order_by("id")
        .values_list("id", flat=True)
    )


def _assignment_move(*, assignment: Assignment, annotator_id: int, actor, reason: str) -> Assignment:
    previous = assignment.annotator
    assignment.annotator_id = annotator_id
    assignment.save(update_fields=["annotator"])
    assignment = Assignment.objects.select_related("annotator", "scan__project").get(pk=assignment.pk)
    audit_log(
        actor=actor,
        project=assignment.scan.project,
        action="assignment.reassign",
        target=assignment,
        data={
            "scan": assignment.scan_id,
            "from": previous.username,
            "to": assignment.annotator.username,
            "status": assignment.status,
            "revisions": assignment.revisions.count(),
            "reason": reason,
        },
    )
    return assignment


@transaction.atomic
def assignments_hand_over(*, project: Project, user, actor, reason: str) -> dict:
    """Give ``user``'s open assignments in the project to the other annotators, least-loaded first.

    An open assignment (not submitted) goes to the annotator with the fewest open assignments
    who does not rate that scan yet (ties: the lower id), revisions and all: the new rater
    continues from the latest saved draft, which stays attributed to whoever drew it. With no
    one to take it, an assignment nothing was saved on is deleted (the scan gets a rater again
    when an annotator joins), and one with saved work is a 409: add an annotator first.
    Returns ``{"reassigned": [(assignment id, username)], "deleted": [assignment id]}``.
    """
    open_assignments = list(
        Assignment.objects.select_for_update()
        .filter(scan__project=project, annotator=user)
        .exclude(status=AssignmentStatus.SUBMITTED)
        .order_by("id")
    )
    result: dict = {"reassigned": [], "deleted": []}
    if not open_assignments:
        return result
    candidates = _annotator_ids(project=project, exclude=[user.pk])
    load = {uid: 0 for uid in candidates}
    load.update({uid: n for uid, n in annotator_load(project=project).items() if uid in load})
    plan: list[tuple[Assignment, int | None]] = []
    stuck: list[Assignment] = []
    for assignment in open_assignments:
        raters = set(Assignment.objects.filter(scan_id=assignment.scan_id).values_list("annotator_id", flat=True))
        options = sorted((uid for uid in candidates if uid not in raters), key=lambda uid: (load[uid], uid))
        if options:
            plan.append((assignment, options[0]))
            load[options[0]] += 1
        elif assignment.revisions.exists():
            stuck.append(assignment)
        else:
            plan.append((assignment, None))
    if stuck:
        scans = ", ".join(str(a.scan_id) for a in stuck)
        raise Conflict(
            f"{user.username} has saved work on open scans ({scans}) and no other annotator of the project "
            "can take them over. Add an annotator to the project first.",
            code="no_one_to_hand_over",
            extra={"scans": [a.scan_id for a in stuck]},
        )
    for assignment, uid in plan:
        if uid is not None:
            moved = _assignment_move(assignment=assignment, annotator_id=uid, actor=actor, reason=reason)
            result["reassigned"].append((moved.pk, moved.annotator.username))
            continue
        scan = assignment.scan
        audit_log(
            actor=actor,
            project=project,
            action="assignment.delete",
            target=assignment,
            data={"scan": scan.pk, "annotator": user.username, "reason": reason},
        )
        result["deleted"].append(assignment.pk)
        assignment.delete()
        scan_complete_check(scan=scan, actor=actor)
    return result


@transaction.atomic
def assignment_reassign(*, assignment: Assignment, actor, annotator) -> Assignment:
    """Give an open assignment (and its saved draft, if any) to another annotator of the project."""
    assignment = (
        Assignment.objects.select_for_update().select_related("scan__project", "annotator").get(pk=assignment.pk)
    )
    project = assignment.scan.project
    if assignment.status == AssignmentStatus.SUBMITTED:
        raise Conflict("This assignment is submitted; only open assignments can be reassigned.", code="submitted")
    if annotator.pk == assignment.annotator_id:
        raise Conflict(f"{annotator.username} already has this assignment.", code="same_annotator")
    if annotator.pk not in _annotator_ids(project=project):
        raise ValidationFailed(
            f"{annotator.username} is not an annotator of this project; add them on the People page first.",
            code="not_an_annotator",
        )
    if Assignment.objects.filter(scan=assignment.scan, annotator=annotator).exists():
        raise Conflict(
            f"{annotator.username} already rates scan {assignment.scan_id}; a rater rates a scan once.",
            code="already_rates",
        )
    return _assignment_move(assignment=assignment, annotator_id=annotator.pk, actor=actor, reason="lead")


@transaction.atomic
def scan_rater_add(*, scan: Scan, actor, annotator=None) -> Assignment:
    """Add one more rater to a scan (e.g. a third when two disagree): its consensus opens again.

    Without ``annotator``, the least-loaded annotator who does not rate the scan yet. A scan
    past its raters (submitted, consensus, flagged, ground truth) goes back to 'in progress';
    when the new rater submits, the scan is complete again and a new consensus runs on every
    submitted rater (:func:`scan_complete_check`).
    """
    scan = Scan.objects.select_for_update().select_related("project").get(pk=scan.pk)
    project = scan.project
    raters = set(scan.assignments.values_list("annotator_id", flat=True))
    annotators = _annotator_ids(project=project)
    if annotator is None:
        load = {uid: 0 for uid in annotators}
        load.update({uid: n for uid, n in annotator_load(project=project).items() if uid in load})
        free = sorted((uid for uid in annotators if uid not in raters), key=lambda uid: (load[uid], uid))
        if not free:
            raise Conflict(
                f"Every annotator of the project already rates scan {scan.pk}; add an annotator first.",
                code="no_free_annotator",
            )
        annotator = User.objects.get(pk=free[0])
    elif annotator.pk not in annotators:
        raise ValidationFailed(
            f"{annotator.username} is not an annotator of this project; add them on the People page first.",
            code="not_an_annotator",
        )
    elif annotator.pk in raters:
        raise Conflict(f"{annotator.username} already rates scan {scan.pk}.", code="already_rates")
    assignment = Assignment.objects.create(scan=scan, annotator=annotator)
    previous_status = scan.status
    reopened = previous_status not in (ScanStatus.NEW, ScanStatus.IN_PROGRESS)
    if reopened:
        scan.status = ScanStatus.IN_PROGRESS
        scan.save(update_fields=["status"])
    audit_log(
        actor=actor,
        project=project,
        action="assignment.create",
        target=assignment,
        data={
            "annotator": annotator.pk,
            "username": annotator.username,
            "extra_rater": True,
            "raters": len(raters) + 1,
            "scan_status_before": previous_status,
            "reopened": reopened,
        },
    )
    return assignment


# --- users -------------------------------------------------------------------------------------


@transaction.atomic
def user_create(*, actor, username: str, password: str, email: str = "") -> User:
    """A site admin creates an account; the password must pass Django's validators (settings)."""
    if not (actor.is_authenticated and (actor.is_staff or actor.is_superuser)):
        raise NotAllowed("Only site admins can create accounts.")
    username_field = User._meta.get_field(User.USERNAME_FIELD)
    try:
        username = username_field.clean(username, None)
    except DjangoValidationError as error:
        raise ValidationFailed(" ".join(error.messages), code="invalid_username") from None
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict(
            f"A user named {username!r} already exists; add them to the project instead.", code="duplicate_user"
        )
    candidate = User(username=username, email=email)
    try:
        password_validation.validate_password(password, user=candidate)
    except DjangoValidationError as error:
        raise ValidationFailed(
            " ".join(error.messages), code="weak_password", extra={"messages": error.messages}
        ) from None
    candidate.set_password(password)
    candidate.save()
    audit_log(
        actor=actor, project=None, action="user.create", target=candidate, data={"username": username, "email": email}
    )
    return candidate


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
    metadata: dict | None = None,
    dicom_series: bytes | None = None,
) -> Scan:
    """Validate and store a NIfTI image (reoriented to RAS+), then assign its raters.

    ``metadata``: any of the scan metadata columns (:mod:`labeling.metadata`), checked first.
    ``dicom_series``: the zip of de-identified slices the image was converted from (DICOM import).
    The same bytes uploaded again are refused (409 ``duplicate_scan`` naming the scan) before
    they are decoded.
    """
    _check_upload_size(raw)
    meta = scan_metadata.clean_record(metadata or {})
    digest = sha256_hex(raw)
    existing = Scan.objects.filter(project=project, sha256=digest).first()
    if existing is not None:
        raise Conflict(
            f"This image is already scan {existing.pk} of the project (same sha256).",
            code="duplicate_scan",
            extra={"scan": existing.pk},
        )
    volume = volumes.load_image(raw, max_decompressed_bytes=settings.MRIANNOT_MAX_DECOMPRESSED_BYTES)
    with (
        transaction.atomic(),
        stored_file(f"scans/{digest}.nii.gz", volume.nifti_bytes, shared=True) as name,
        _maybe_stored(f"scans/{digest}-dicom.zip", dicom_series) as series_name,
    ):
        try:
            scan = Scan.objects.create(
                project=project,
                sha256=digest,
                image=name,
                dicom_series=series_name,
                original_filename=filename[:255],
                shape=list(volume.shape),
                spacing=[float(s) for s in volume.spacing],
                affine=[[float(v) for v in row] for row in volume.affine],
                orientation=volume.orientation,
                subject_id=subject_id,
                session_id=session_id,
                split=split,
                uploaded_by=actor,
                **meta,
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
            data={
                "sha256": digest,
                "filename": filename,
                "shape": scan.shape,
                "orientation": volume.orientation,
                "split": split,
                "metadata": meta,
            },
        )
        assignments_balance(project=project, actor=actor, scans=[scan])
        scans_added.send(sender=Scan, project=project, scans=[scan])
    return scan


def scan_channel_add(*, scan: Scan, actor, raw: bytes, role: str, dicom_series: bytes | None = None) -> ScanChannel:
    """Add a sequence (``role``, one the project declares after its first) to a scan.

    The image is validated like any scan, reoriented to RAS+ and, when its grid differs from the
    scan's, resampled onto it (:mod:`labeling.channels`: by the affines, no registration); one
    that sees less than half of the scan's voxels is refused (``no_overlap``). ``dicom_series``:
    the zip of de-identified slices it was converted from (DICOM import).
    """
    project = scan.project
    declared = project_channel_roles(project=project, scan=scan)
    if role == declared[0]:
        raise ValidationFailed(f"The scan's own image is its {role} channel.", code="reference_channel")
    if role not in declared[1:]:
        others = ", ".join(declared[1:]) or "none"
        raise ValidationFailed(
            f"The project does not declare a {role} channel (it declares: {others}); a lead adds it in the "
            "project's settings first.",
            code="channel_not_declared",
        )
    if scan.channels.filter(role=role).exists():
        raise Conflict(f"Scan {scan.pk} already has a {role} channel.", code="duplicate_channel")
    _check_upload_size(raw)
    volume = volumes.load_image(raw, max_decompressed_bytes=settings.MRIANNOT_MAX_DECOMPRESSED_BYTES)
    placed = channels.resample_onto(volume.data, volume.affine, shape=scan.shape, affine=scan.affine)
    if placed.coverage < channels.MIN_COVERAGE:
        raise ValidationFailed(
            f"The {role} image covers {placed.coverage:.0%} of the scan's field of view (at least "
            f"{channels.MIN_COVERAGE:.0%} needed): is it from the same session?",
            code="no_overlap",
        )
    data = volume.nifti_bytes if not placed.resampled else volumes.image_to_bytes(placed.data, scan.affine)
    digest = sha256_hex(raw)
    folder = f"channels/{scan.pk}"
    with (
        transaction.atomic(),
        stored_file(f"{folder}/{role}-{sha256_hex(data)[:16]}.nii.gz", data) as name,
        _maybe_stored(f"{folder}/{role}-dicom-{digest[:16]}.zip", dicom_series) as series_name,
    ):
        try:
            channel = ScanChannel.objects.create(
                scan=scan,
                role=role,
                sha256=digest,
                image=name,
                resampled=placed.resampled,
                transform=placed.transform,
                source_shape=list(volume.shape),
                source_spacing=[float(v) for v in volume.spacing],
                coverage=placed.coverage,
                dicom_series=series_name,
                created_by=actor,
            )
        except IntegrityError:
            raise Conflict(f"Scan {scan.pk} already has a {role} channel.", code="duplicate_channel") from None
        audit_log(
            actor=actor,
            project=project,
            action="scan.channel_add",
            target=scan,
            data={
                "role": role,
                "sha256": digest,
                "resampled": placed.resampled,
                "transform": placed.transform,
                "coverage": round(placed.coverage, 4),
                "source_shape": list(volume.shape),
            },
        )
    return channel


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
    if (
        source == RevisionSource.PRELABEL
        and Project.objects.filter(pk=assignment.scan.project_id, prelabel_policy=PrelabelPolicy.OFF).exists()
    ):
        raise ValidationFailed(
            "This project shows no pre-labels (its pre-label policy is off): save with source=manual.",
            code="prelabel_off",
        )
    _check_upload_size(raw)
    scan = assignment.scan
    labels = label_map_for_scan(scan=scan, raw=raw)
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
    resubmission = locked.status == AssignmentStatus.RETURNED
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
    audit_log(
        actor=actor,
        project=scan.project,
        action="assignment.submit",
        target=locked,
        data={"revision": head.pk, "resubmission": resubmission},
    )
    assignment_submitted.send(sender=Assignment, assignment=locked, revision=head)
    scan_complete_check(scan=scan, actor=actor)
    return locked


def scan_complete_check(*, scan: Scan, actor) -> bool:
    """Mark the scan 'submitted' and send :data:`labeling.signals.scan_fully_submitted` when every
    assignment of it is submitted and there are at least ``raters_per_scan`` of them (an extra
    rater added by a lead is waited for too). Call inside the transaction that changed them."""
    statuses = list(scan.assignments.values_list("status", flat=True))
    submitted = statuses.count(AssignmentStatus.SUBMITTED)
    if (
        submitted >= scan.project.raters_per_scan
        and submitted == len(statuses)
        and scan.status in (ScanStatus.NEW, ScanStatus.IN_PROGRESS)
    ):
        scan.status = ScanStatus.SUBMITTED
        scan.save(update_fields=["status"])
        scan_fully_submitted.send(sender=Scan, scan=scan, actor=actor)
        return True
    return False


# --- rework and comments -----------------------------------------------------------------------


def _comment_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("Write a comment: it cannot be empty.", code="empty_comment")
    if len(text) > TEXT_MAX_CHARS:
        raise ValidationFailed(
            f"The comment is {len(text)} characters; the limit is {TEXT_MAX_CHARS}.", code="comment_too_long"
        )
    return text


@transaction.atomic
def assignment_return(*, assignment: Assignment, actor, comment: str) -> tuple[Assignment, Comment]:
    """A lead sends a rater's submission back for rework, saying why in ``comment`` (required).

    The assignment becomes ``returned``: the rater edits on from their submitted revision (which,
    like every revision, stays as it was) and submits again; a returned assignment comes first in
    their worklist. The scan goes back to ``in_progress``: its consensus runs and ground truths stay
    as history, but none of them counts as final until the rater has resubmitted and a consensus of
    the new submissions has decided the scan again (``consensus.services.runs``). The resubmission
    takes the ordinary path: the last submission queues the consensus.
    """
    locked = (
        Assignment.objects.select_for_update()
        .select_related("scan", "scan__project", "annotator")
        .get(pk=assignment.pk)
    )
    if not user_manages_project(user=actor, project=locked.scan.project):
        raise NotAllowed("Only a lead or admin of this project can send a submission back.")
    text = _comment_text(comment)
    if locked.status != AssignmentStatus.SUBMITTED:
        raise Conflict(
            f"Only a submitted assignment can be sent back; this one is {locked.get_status_display().lower()}.",
            code="not_submitted",
        )
    head = assignment_head(assignment=locked)
    locked.status = AssignmentStatus.RETURNED
    locked.submitted_at = None
    locked.save(update_fields=["status", "submitted_at"])
    scan = Scan.objects.select_for_update().select_related("project").get(pk=locked.scan_id)
    previous_status = scan.status
    scan.status = ScanStatus.IN_PROGRESS
    scan.save(update_fields=["status"])
    note = Comment.objects.create(
        scan=scan,
        assignment=locked,
        author=actor,
        author_role=project_role(user=actor, project=scan.project),
        kind=CommentKind.RETURN,
        text=text,
    )
    audit_log(
        actor=actor,
        project=scan.project,
        action="assignment.return",
        target=locked,
        data={
            "annotator": locked.annotator.username,
            "revision": head.pk if head else None,
            "comment": note.pk,
            "scan": scan.pk,
            "scan_status_before": previous_status,
        },
    )
    return locked, note


@transaction.atomic
def comment_create(*, scan: Scan, actor, text: str, assignment: Assignment | None = None) -> Comment:
    """Add a comment to a scan's thread.

    A rater writes on their own assignment of the scan (to the leads); a lead writes on any
    assignment of the scan (to its rater), or on none (a note the leads alone see).
    """
    text = _comment_text(text)
    role = project_role(user=actor, project=scan.project)
    manager = role in (Role.LEAD, Role.ADMIN)
    if assignment is None and not manager:
        assignment = Assignment.objects.filter(scan=scan, annotator=actor).first()
        if assignment is None:
            raise NotAllowed("Only the scan's raters and the project's leads can comment on it.")
    if assignment is not None:
        if assignment.scan_id != scan.pk:
            raise ValidationFailed(
                f"Assignment {assignment.pk} is not an assignment of scan {scan.pk}.", code="wrong_assignment"
            )
        if not manager and assignment.annotator_id != actor.pk:
            raise NotAllowed("You can only comment on your own assignment.")
    comment = Comment.objects.create(scan=scan, assignment=assignment, author=actor, author_role=role, text=text)
    audit_log(
        actor=actor,
        project=scan.project,
        action="comment.create",
        target=comment,
        data={"scan": scan.pk, "assignment": assignment.pk if assignment else None, "chars": len(text)},
    )
    return comment


# --- the Scans page: a scan's split and metadata, splits by rule, metadata from a CSV, archives ---


def _split_change_check(*, project: Project, scan_ids, override_frozen: bool) -> list[dict]:
    """The model versions that used these scans (see ``scan_split_usage``), or 409 ``split_frozen``
    listing them when the change is not explicitly overridden."""
    usage = scan_split_usage(project=project, scan_ids=scan_ids)
    versions = invalidated_versions(usage)
    if versions and not override_frozen:
        scans = sorted({u["scan"] for u in usage})
        listed = ", ".join(f"v{v['version']}" for v in versions)
        raise Conflict(
            f"The split of {len(scans)} scan(s) is frozen: model version(s) {listed} trained or validated on "
            "them, and moving them would make those versions' validation figures misleading. Send "
            "override_frozen=true to change it anyway; the change is recorded with the versions it invalidates.",
            code="split_frozen",
            extra={"scans": scans, "model_versions": versions},
        )
    return versions


@transaction.atomic
def scan_update(
    *, scan: Scan, actor, split: str | None = None, metadata: dict | None = None, override_frozen: bool = False
) -> tuple[Scan, list[dict]]:
    """Change a scan's split and/or metadata; returns the scan and the model versions invalidated.

    A split that a finished model version trained or validated on is frozen: changing it needs
    ``override_frozen`` (else 409 ``split_frozen`` with the versions), and the audit event names
    the versions it invalidates.
    """
    locked = Scan.objects.select_for_update().select_related("project").get(pk=scan.pk)
    project = locked.project
    invalidated: list[dict] = []
    if split is not None and split != locked.split:
        if split not in Split.values:
            raise ValidationFailed(f"Unknown split {split!r}; use one of {Split.values}.")
        invalidated = _split_change_check(project=project, scan_ids=[locked.pk], override_frozen=override_frozen)
        audit_log(
            actor=actor,
            project=project,
            action="scan.split_change",
            target=locked,
            data={"from": locked.split, "to": split, "invalidated_model_versions": invalidated},
        )
        locked.split = split
        locked.save(update_fields=["split"])
    if metadata:
        cleaned = scan_metadata.clean_record(metadata)
        changes = {c: [getattr(locked, c), v] for c, v in cleaned.items() if getattr(locked, c) != v}
        if changes:
            for column, (_, value) in changes.items():
                setattr(locked, column, value)
            locked.save(update_fields=list(changes))
            audit_log(
                actor=actor,
                project=project,
                action="scan.metadata_update",
                target=locked,
                data={"changes": changes, "source": "edit"},
            )
    return locked, invalidated


@transaction.atomic
def scan_splits_apply(
    *,
    project: Project,
    actor,
    percentages: dict,
    seed: int,
    stratify_by: str = "",
    scope: str = "unassigned",
    override_frozen: bool = False,
    plan_id: str | None = None,
) -> dict:
    """Deal the project's scans into splits by a rule (labeling.splits) and store it.

    The plan is the preview's (``split_plan``, same arguments): with ``plan_id`` given, a plan
    that no longer matches (scans added or moved since the preview) is refused (409
    ``plan_changed``). Frozen scans need ``override_frozen``. Every moved scan gets an audit
    event; the rule gets one on the project, with the model versions it invalidates.
    """
    Project.objects.select_for_update().get(pk=project.pk)  # one rule at a time per project
    try:
        plan = split_plan(project=project, percentages=percentages, seed=seed, stratify_by=stratify_by, scope=scope)
    except ValueError as error:
        raise ValidationFailed(str(error), code="invalid_rule") from None
    if plan_id is not None and plan_id != plan["plan_id"]:
        raise Conflict(
            "The scans changed since this preview (scans were added or moved): preview the rule again.",
            code="plan_changed",
            extra={"plan_id": plan["plan_id"]},
        )
    versions = _split_change_check(
        project=project, scan_ids=[c["scan"] for c in plan["frozen"]], override_frozen=override_frozen
    )
    changes = plan["changes"]
    by_target: dict[str, list[int]] = {}
    for change in changes:
        by_target.setdefault(change["to"], []).append(change["scan"])
    for target, ids in by_target.items():
        Scan.objects.filter(project=project, pk__in=ids).update(split=target)
    frozen = {c["scan"]: c["model_versions"] for c in plan["frozen"]}
    for change in changes:
        audit_log(
            actor=actor,
            project=project,
            action="scan.split_change",
            target=Scan(pk=change["scan"]),
            data={
                "from": change["from"],
                "to": change["to"],
                "rule": plan["rule"],
                "invalidated_model_versions": frozen.get(change["scan"], []),
            },
        )
    audit_log(
        actor=actor,
        project=project,
        action="project.splits_apply",
        target=project,
        data={
            "rule": plan["rule"],
            "plan_id": plan["plan_id"],
            "changed": len(changes),
            "counts": plan["counts"],
            "invalidated_model_versions": versions,
        },
    )
    return {**plan, "applied": True, "changed": len(changes), "invalidated_model_versions": versions}


@transaction.atomic
def scan_metadata_import(*, project: Project, actor, raw: bytes) -> dict:
    """Set scan metadata from a CSV (see ``metadata_csv_preview``): all rows or none.

    A file with any row in error changes nothing (400 ``csv_rows_refused``, with the rows);
    otherwise every changed scan gets its new values and an audit event.
    """
    preview = metadata_csv_preview(project=project, raw=raw)
    if preview["errors"]:
        raise ValidationFailed(
            f"{preview['errors']} row(s) of the CSV are refused; nothing was changed. Fix them and send it again.",
            code="csv_rows_refused",
            extra={"rows": [r for r in preview["rows"] if r["errors"]][:200]},
        )
    changed = [row for row in preview["rows"] if row["changes"]]
    scans = Scan.objects.select_for_update().in_bulk([row["scan"] for row in changed])
    for row in changed:
        scan = scans[row["scan"]]
        for column, (_, value) in row["changes"].items():
            setattr(scan, column, value)
        scan.save(update_fields=list(row["changes"]))
        audit_log(
            actor=actor,
            project=project,
            action="scan.metadata_update",
            target=scan,
            data={"changes": row["changes"], "source": "csv", "line": row["line"]},
        )
    return {**preview, "applied": True}


def scans_archive_create(
    *, project: Project, actor, archive, metadata: dict | None = None, split: str = "unassigned"
) -> dict:
    """Store every NIfTI file of a .zip as a scan; one result per member.

    The archive's whole directory is checked first (labeling.archives: member count, paths,
    declared and compressed sizes): an unsafe archive is refused whole and nothing is stored.
    Then each member is read (at most its declared size, one at a time) and goes through
    :func:`scan_create` on its own: stored whole or not at all, duplicates named, refusals
    with the server's reason. Not one transaction: a refused member does not undo the others.
    """
    meta = scan_metadata.clean_record(metadata or {})
    opened = archives.open_archive(
        archive,
        max_members=settings.MRIANNOT_MAX_ARCHIVE_MEMBERS,
        max_member_bytes=settings.MRIANNOT_MAX_UPLOAD_BYTES,
        max_total_bytes=settings.MRIANNOT_MAX_ARCHIVE_BYTES,
    )
    results = [{"name": name, "status": "refused", "error": code, "detail": why} for name, code, why in opened.skipped]
    fault: StorageUnavailable | None = None
    for member in opened.members:
        result = {"name": member.name}
        if fault is not None:  # the server cannot store now: the rest is not tried
            results.append({**result, "status": "refused", "error": "not_tried", "detail": fault.message})
            continue
        try:
            scan = scan_create(
                project=project,
                actor=actor,
                raw=opened.read(member),  # one member held at a time
                filename=member.filename,
                split=split,
                metadata=meta,
            )
            result.update(status="stored", scan=scan.pk)
        except Conflict as error:
            if error.code != "duplicate_scan":
                raise
            result.update(status="duplicate", scan=error.extra.get("scan"), error=error.code, detail=error.message)
        except (ServiceError, InputRefused) as error:
            fault = storage_fault(error)
            result.update(status="refused", error=error.code, detail=error.message)
        except (OSError, DatabaseError) as error:
            fault = storage_fault(error)
            if fault is None:
                raise
            result.update(status="refused", error=fault.code, detail=fault.message)
        results.append(result)
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("stored", "duplicate", "refused")}
    audit_log(
        actor=actor,
        project=project,
        action="scan.archive_upload",
        target=project,
        data={"members": len(opened.members), **counts},
    )
    return {"results": results, **counts}

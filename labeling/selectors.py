"""Reads: who may see what. Every API query goes through these, so blinding holds everywhere.

Visibility rules
----------------
- A site admin (Django staff) sees everything.
- A project's lead or admin sees everything in that project.
- An annotator sees the projects they belong to, and only the scans, assignments and
  revisions assigned to them: never another rater's labels.
- Anything else is invisible, and the API answers 404 for it.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Case, Count, Q, QuerySet, Value, When

from .models import (
    AnnotationRevision,
    ApiToken,
    Assignment,
    AssignmentStatus,
    AuditEvent,
    LabelClass,
    Membership,
    Project,
    Role,
    Scan,
)

MANAGER_ROLES = (Role.LEAD, Role.ADMIN)


def user_is_site_admin(user: AbstractBaseUser) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.is_superuser))


def project_role(*, user: AbstractBaseUser, project: Project) -> str | None:
    """The user's role in the project: 'admin' for site admins, else the membership role or None."""
    if not user.is_authenticated:
        return None
    if user_is_site_admin(user):
        return Role.ADMIN
    membership = Membership.objects.filter(project=project, user=user).only("role").first()
    return membership.role if membership else None


def user_manages_project(*, user: AbstractBaseUser, project: Project) -> bool:
    return project_role(user=user, project=project) in MANAGER_ROLES


def project_list(*, user: AbstractBaseUser) -> QuerySet[Project]:
    if user_is_site_admin(user):
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def managed_project_ids(*, user: AbstractBaseUser) -> QuerySet:
    return Membership.objects.filter(user=user, role__in=MANAGER_ROLES).values("project_id")


def scan_list(*, user: AbstractBaseUser) -> QuerySet[Scan]:
    if user_is_site_admin(user):
        return Scan.objects.all()
    return Scan.objects.filter(
        Q(project_id__in=managed_project_ids(user=user)) | Q(assignments__annotator=user)
    ).distinct()


def assignment_list(*, user: AbstractBaseUser) -> QuerySet[Assignment]:
    qs = Assignment.objects.select_related("scan", "scan__project", "annotator")
    if user_is_site_admin(user):
        return qs
    return qs.filter(Q(scan__project_id__in=managed_project_ids(user=user)) | Q(annotator=user))


def revision_list(*, user: AbstractBaseUser) -> QuerySet[AnnotationRevision]:
    qs = AnnotationRevision.objects.select_related("assignment", "assignment__scan")
    if user_is_site_admin(user):
        return qs
    return qs.filter(Q(assignment__scan__project_id__in=managed_project_ids(user=user)) | Q(assignment__annotator=user))


def worklist(*, user: AbstractBaseUser, project: Project | None = None) -> QuerySet[Assignment]:
    """The user's own assignments: open ones first, then by priority (higher first), then age."""
    qs = (
        Assignment.objects.filter(annotator=user)
        .select_related("scan", "scan__project")
        .annotate(revision_count=Count("revisions"))
    )
    if project is not None:
        qs = qs.filter(scan__project=project)
    is_done = Case(When(status=AssignmentStatus.SUBMITTED, then=Value(1)), default=Value(0))
    return qs.annotate(is_done=is_done).order_by("is_done", "-priority", "id")


def assignment_head(*, assignment: Assignment) -> AnnotationRevision | None:
    """The latest revision of an assignment, or None before the first save."""
    return assignment.revisions.order_by("-number").first()


def label_values(*, project: Project) -> list[int]:
    """The label values a label map of this project may hold, background (0) included."""
    return [0, *LabelClass.objects.filter(project=project).values_list("value", flat=True)]


def audit_list(*, project: Project) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(project=project)


def annotator_load(*, project: Project) -> dict[int, int]:
    """Open assignments per annotator of the project (user id -> count)."""
    rows = (
        Assignment.objects.filter(scan__project=project)
        .exclude(status=AssignmentStatus.SUBMITTED)
        .values("annotator_id")
        .annotate(n=Count("id"))
    )
    return {row["annotator_id"]: row["n"] for row in rows}


def api_token_list(*, user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """A user's own API tokens (expired ones too, until the next token made purges them); never another's."""
    return ApiToken.objects.filter(user=user)

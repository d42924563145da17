"""Reads: who may see what. Every API query goes through these, so blinding holds everywhere.

Visibility rules
----------------
- A site admin (Django staff) sees everything.
- A project's lead or admin sees everything in that project.
- An annotator sees the projects they belong to, and only the scans, assignments and
  revisions assigned to them: never another rater's labels. Of a scan they see their own
  assignment's status, never how its consensus came out (:func:`rater_scan_status`). Of its
  comments they see the thread of their own assignment with the leads, never another rater's.
- Anything else is invisible, and the API answers 404 for it.
"""

from __future__ import annotations

import datetime as dt

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import (
    Case,
    Count,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.functions import RowNumber, TruncDate

from .models import (
    AnnotationRevision,
    ApiToken,
    Assignment,
    AssignmentStatus,
    AuditEvent,
    Comment,
    CommentKind,
    LabelClass,
    Membership,
    Project,
    Role,
    Scan,
    ScanChannel,
    ScanStatus,
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


def user_manages_project_id(*, user: AbstractBaseUser, project_id: int) -> bool:
    """:func:`user_manages_project` by the project's id (False for a project that does not exist)."""
    if user_is_site_admin(user):
        return Project.objects.filter(pk=project_id).exists()
    return Membership.objects.filter(project_id=project_id, user=user, role__in=MANAGER_ROLES).exists()


def project_list(*, user: AbstractBaseUser) -> QuerySet[Project]:
    if user_is_site_admin(user):
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def managed_project_ids(*, user: AbstractBaseUser) -> QuerySet:
    return Membership.objects.filter(user=user, role__in=MANAGER_ROLES).values("project_id")


def member_project_ids(*, user: AbstractBaseUser) -> QuerySet:
    """The projects the user is a member of now (a removed member keeps no access to their old work)."""
    return Membership.objects.filter(user=user).values("project_id")


def scan_list(*, user: AbstractBaseUser) -> QuerySet[Scan]:
    if user_is_site_admin(user):
        return Scan.objects.all()
    return Scan.objects.filter(
        Q(project_id__in=managed_project_ids(user=user))
        | Q(assignments__annotator=user, project_id__in=member_project_ids(user=user))
    ).distinct()


def assignment_list(*, user: AbstractBaseUser) -> QuerySet[Assignment]:
    qs = Assignment.objects.select_related("scan", "scan__project", "annotator")
    if user_is_site_admin(user):
        return qs
    return qs.filter(
        Q(scan__project_id__in=managed_project_ids(user=user))
        | Q(annotator=user, scan__project_id__in=member_project_ids(user=user))
    )


def assignment_list_rows(*, assignments: QuerySet[Assignment]) -> QuerySet[Assignment]:
    """Assignments as the assignment list answers them: each with ``head_revision_id`` (its
    latest revision, or None), read in the same query rather than one query per assignment."""
    head = AnnotationRevision.objects.filter(assignment=OuterRef("pk")).order_by("-number").values("pk")[:1]
    return assignments.annotate(head_revision_id=Subquery(head))


def scan_rater_names(*, scan_ids) -> dict[int, list[str]]:
    """Every rater of these scans (scan id -> usernames, by assignment id): for leads only."""
    raters: dict[int, list[str]] = {}
    rows = Assignment.objects.filter(scan_id__in=scan_ids).order_by("id").values_list("scan_id", "annotator__username")
    for scan_id, username in rows:
        raters.setdefault(scan_id, []).append(username)
    return raters


def revision_list(*, user: AbstractBaseUser) -> QuerySet[AnnotationRevision]:
    qs = AnnotationRevision.objects.select_related("assignment", "assignment__scan")
    if user_is_site_admin(user):
        return qs
    return qs.filter(
        Q(assignment__scan__project_id__in=managed_project_ids(user=user))
        | Q(assignment__annotator=user, assignment__scan__project_id__in=member_project_ids(user=user))
    )


def worklist(*, user: AbstractBaseUser, project: Project | None = None) -> QuerySet[Assignment]:
    """The user's own assignments: those a lead sent back first (someone waits for them), then the
    other open ones, then the submitted; within each, by priority (higher first), then age."""
    qs = Assignment.objects.filter(annotator=user, scan__project_id__in=member_project_ids(user=user)).select_related(
        "scan", "scan__project"
    )
    if project is not None:
        qs = qs.filter(scan__project=project)
    rank = Case(
        When(status=AssignmentStatus.RETURNED, then=Value(0)),
        When(status=AssignmentStatus.SUBMITTED, then=Value(2)),
        default=Value(1),
    )
    return qs.annotate(worklist_rank=rank).order_by("worklist_rank", "-priority", "id")


def revision_counts(*, assignment_ids) -> dict[int, int]:
    """Saved revisions of each of these assignments (id -> count; absent: none), for one page of
    the worklist (counted in the worklist's own query, they joined every revision of every
    assignment it sorted)."""
    rows = (
        AnnotationRevision.objects.filter(assignment_id__in=assignment_ids)
        .order_by()
        .values("assignment_id")
        .annotate(n=Count("id"))
        .values_list("assignment_id", "n")
    )
    return dict(rows)


def rater_scan_status(*, user: AbstractBaseUser, scans: list[Scan]) -> dict[int, str]:
    """What a rater is told of each scan's status: their own assignment's status (scan id -> status).

    Never the scan's own status: ``flagged``, ``consensus`` and ``ground_truth`` say how the
    raters' labels compared, which a rater must not learn (blinding).
    """
    rows = Assignment.objects.filter(annotator=user, scan__in=scans).values_list("scan_id", "status")
    return dict(rows)


def comment_list(*, user: AbstractBaseUser) -> QuerySet[Comment]:
    """Comments the user may read: all of a project they lead; else those on their own assignments."""
    qs = Comment.objects.select_related("assignment")
    if user_is_site_admin(user):
        return qs
    return qs.filter(Q(scan__project_id__in=managed_project_ids(user=user)) | Q(assignment__annotator=user))


def return_comments(*, assignments: list[Assignment]) -> dict[int, Comment]:
    """The latest 'returned for rework' comment of each of these assignments that is returned now."""
    returned = [a.pk for a in assignments if a.status == AssignmentStatus.RETURNED]
    latest: dict[int, Comment] = {}
    for comment in Comment.objects.filter(assignment_id__in=returned, kind=CommentKind.RETURN).order_by("id"):
        latest[comment.assignment_id] = comment
    return latest


def scan_in_rework(*, scan: Scan) -> bool:
    """True while a submission of the scan is back with its rater (sent back by a lead)."""
    return scan.assignments.filter(status=AssignmentStatus.RETURNED).exists()


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


# --- the lead's pages: projects, project home, people ------------------------------------------

#: Scan statuses past their raters: every rater submitted (the consensus may have run).
SUBMITTED_STATUSES = (ScanStatus.SUBMITTED, ScanStatus.CONSENSUS, ScanStatus.FLAGGED, ScanStatus.GROUND_TRUTH)


def project_has_revisions(*, project: Project) -> bool:
    """True once any rater saved labels in the project: from then on label values are fixed."""
    return AnnotationRevision.objects.filter(assignment__scan__project=project).exists()


def project_summary(*, project: Project) -> dict:
    """A project's counts for its home page: scans by stage, assignments, members, the schema lock.

    ``labelled``: scans with at least one saved revision (past 'new'); ``submitted``: scans whose
    raters all submitted; ``flagged``: waiting for a lead; ``ground_truth``: done. ``progress``
    is ground_truth / scans (0 for a project without scans).
    """
    by_status = dict(
        Scan.objects.filter(project=project).values("status").annotate(n=Count("id")).values_list("status", "n")
    )
    scans = sum(by_status.values())
    assignments = dict(
        Assignment.objects.filter(scan__project=project)
        .values("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    roles = dict(
        Membership.objects.filter(project=project).values("role").annotate(n=Count("id")).values_list("role", "n")
    )
    done = by_status.get(ScanStatus.GROUND_TRUTH, 0)
    return {
        "scans": scans,
        "labelled": scans - by_status.get(ScanStatus.NEW, 0),
        "submitted": sum(by_status.get(s, 0) for s in SUBMITTED_STATUSES),
        "flagged": by_status.get(ScanStatus.FLAGGED, 0),
        "ground_truth": done,
        "progress": done / scans if scans else 0.0,
        "by_status": {status: by_status.get(status, 0) for status in ScanStatus.values},
        "assignments": {
            "total": sum(assignments.values()),
            "open": sum(n for status, n in assignments.items() if status != AssignmentStatus.SUBMITTED),
            "submitted": assignments.get(AssignmentStatus.SUBMITTED, 0),
        },
        "members": {role: roles.get(role, 0) for role in Role.values},
        "schema_locked": project_has_revisions(project=project),
    }


def project_progress(*, user: AbstractBaseUser, projects) -> dict[int, dict]:
    """Per project, what the projects page shows the user (project id -> dict).

    A lead or admin sees the project's scans and the fraction with a ground truth; an annotator
    their own assignments and the fraction they submitted (never how the consensus went).
    """
    projects = list(projects)
    ids = [p.pk for p in projects]
    scans = dict(
        Scan.objects.filter(project_id__in=ids)
        .values("project_id")
        .annotate(n=Count("id"))
        .values_list("project_id", "n")
    )
    truths = dict(
        Scan.objects.filter(project_id__in=ids, status=ScanStatus.GROUND_TRUTH)
        .values("project_id")
        .annotate(n=Count("id"))
        .values_list("project_id", "n")
    )
    mine = {}
    for row in (
        Assignment.objects.filter(annotator=user, scan__project_id__in=ids)
        .values("scan__project_id")
        .annotate(n=Count("id"), done=Count("id", filter=Q(status=AssignmentStatus.SUBMITTED)))
    ):
        mine[row["scan__project_id"]] = (row["n"], row["done"])
    roles = (
        {}
        if user_is_site_admin(user)
        else dict(Membership.objects.filter(user=user, project_id__in=ids).values_list("project_id", "role"))
    )
    result = {}
    for project in projects:
        role = Role.ADMIN if user_is_site_admin(user) else roles.get(project.pk)
        if role in MANAGER_ROLES:
            total, done, of = scans.get(project.pk, 0), truths.get(project.pk, 0), "scans with a ground truth"
        else:
            total, done = mine.get(project.pk, (0, 0))
            of = "your scans submitted"
        result[project.pk] = {"scans": total, "done": done, "fraction": done / total if total else 0.0, "of": of}
    return result


class _Seconds(Func):
    """``end - start`` in seconds (a float), native on both databases: an order key, no Python
    function per row (Django's datetime subtraction calls one on SQLite)."""

    output_field = FloatField()
    arity = 2

    def as_sql(self, compiler, connection, **extra):  # PostgreSQL
        return self._render(compiler, connection, "EXTRACT(EPOCH FROM (%(expressions)s))", " - ", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        template = "((julianday(%(expressions)s)) * 86400.0)"
        return self._render(compiler, connection, template, ") - julianday(", **extra)

    def _render(self, compiler, connection, template, joiner, **extra):
        return super().as_sql(compiler, connection, template=template, arg_joiner=joiner, **extra)


class _UtcDate(TruncDate):
    """The UTC day of a timestamp; on SQLite with the native ``date()`` (timestamps are stored in UTC)."""

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.lhs)
        return f"date({sql})", params


def _median_durations(*, project: Project) -> dict[int, float]:
    """Per annotator (id -> seconds), the median time from the first save to the submission of
    their submitted assignments in the project, picked in the database.

    The first save is the assignment's revision number 1 (revisions are numbered as they are
    saved and never change, so it is the earliest): one join, no subquery per assignment. Each
    rater's durations are ranked in a window (ROW_NUMBER and COUNT partitioned by the rater) and
    only the middle one or two rows per rater come back: at most two rows per rater however many
    scans they submitted. The exact seconds of those rows are then computed here from their
    timestamps (the database's order key is a float of seconds; two durations closer than ~10 µs
    may come in either order, which moves the median by as little).
    """
    firsts = AnnotationRevision.objects.filter(
        number=1,
        assignment__scan__project=project,
        assignment__status=AssignmentStatus.SUBMITTED,
        assignment__submitted_at__isnull=False,
    )
    by_rater = {"partition_by": [F("assignment__annotator_id")]}
    seconds = _Seconds(F("assignment__submitted_at"), F("created_at"))
    middle = (
        firsts.order_by()
        .annotate(
            rank=Window(RowNumber(), order_by=[seconds.asc(), F("id").asc()], **by_rater),
            timed=Window(Count("id"), **by_rater),
        )
        .annotate(twice=F("rank") * 2)
        .filter(twice__gte=F("timed"), twice__lte=F("timed") + 2)
        .values_list("assignment__annotator_id", "assignment__submitted_at", "created_at")
    )
    picked: dict[int, list[float]] = {}
    for annotator_id, submitted_at, first_saved in middle:
        picked.setdefault(annotator_id, []).append((submitted_at - first_saved).total_seconds())
    return {uid: sum(values) / len(values) for uid, values in picked.items()}


def rater_stats(*, project: Project) -> list[dict]:
    """Per rater of the project (its annotators, and anyone else who has assignments in it), by
    username: open / in progress / submitted counts, the median time per scan and scans per day.

    Time per scan is from the assignment's first saved revision to its submission (the time the
    rater worked on it, not the time it waited in the worklist); scans per day is the submitted
    scans divided by the number of days (UTC) on which the rater submitted at least one.

    Four queries whatever the project's size: the members, one GROUP BY annotator for the counts
    and submission days, the medians (:func:`_median_durations`), the usernames. Nothing per
    assignment comes back to Python; the answer is one row per rater.
    """
    members = dict(Membership.objects.filter(project=project).values_list("user_id", "role"))
    assignments = Assignment.objects.filter(scan__project=project)
    submitted = Q(status=AssignmentStatus.SUBMITTED)
    counts = {
        row["annotator_id"]: row
        for row in assignments.values("annotator_id").annotate(
            todo=Count("id", filter=Q(status=AssignmentStatus.TODO)),
            in_progress=Count("id", filter=Q(status=AssignmentStatus.IN_PROGRESS)),
            open=Count("id", filter=~submitted),
            submitted=Count("id", filter=submitted),
            days=Count(
                _UtcDate("submitted_at", tzinfo=dt.UTC),
                filter=submitted & Q(submitted_at__isnull=False),
                distinct=True,
            ),
        )
    }
    medians = _median_durations(project=project)
    user_ids = set(counts) | {u for u, r in members.items() if r == Role.ANNOTATOR}
    names = dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))
    rows = []
    for uid in sorted(user_ids, key=lambda u: names.get(u, "")):
        row = counts.get(uid, {})
        done, days = row.get("submitted", 0), row.get("days", 0)
        rows.append(
            {
                "user_id": uid,
                "username": names.get(uid, ""),
                "role": members.get(uid),
                "todo": row.get("todo", 0),
                "in_progress": row.get("in_progress", 0),
                "open": row.get("open", 0),
                "submitted": done,
                "median_seconds_per_scan": medians.get(uid),
                "scans_per_day": done / days if days else None,
            }
        )
    return rows


# --- the Scans page: the table, splits by rule, metadata from a CSV ------------------------------


def scan_table(
    *,
    user: AbstractBaseUser,
    project: Project,
    status: str | None = None,
    split: str | None = None,
    text: str | None = None,
) -> QuerySet[Scan]:
    """The project's scans the user may see, filtered, oldest first, each with the assignments the
    user may see (``visible_assignments``: every rater's for a lead, only their own for a rater)."""
    from django.db.models import Prefetch

    manages = user_manages_project(user=user, project=project)
    # A lead sees every scan of the project: no join with the assignments (and no DISTINCT), so the
    # page's count is a count of the project's index range.
    qs = Scan.objects.filter(project=project) if manages else scan_list(user=user).filter(project=project)
    if status:
        qs = qs.filter(status=status)
    if split:
        qs = qs.filter(split=split)
    if text:
        qs = qs.filter(Q(subject_id__icontains=text) | Q(session_id__icontains=text))
    visible = (Assignment.objects.all() if manages else assignment_list(user=user).select_related(None)).select_related(
        "annotator"
    )
    visible = visible.order_by("id")
    return qs.order_by("id").prefetch_related(Prefetch("assignments", queryset=visible, to_attr="visible_assignments"))


def scan_split_usage(*, project: Project, scan_ids) -> list[dict]:
    """The model versions that trained or validated on these scans: their split is frozen.

    Asked of the apps that train (:data:`labeling.signals.split_usage_requested`); a list of
    ``{"scan", "model_version", "version", "used_as"}``, by scan then version.
    """
    from .signals import split_usage_requested

    ids = sorted({int(i) for i in scan_ids})
    if not ids:
        return []
    rows = []
    for _, answer in split_usage_requested.send(sender=Scan, project=project, scan_ids=ids):
        rows.extend(answer or [])
    return sorted(rows, key=lambda r: (r["scan"], r["version"], r["used_as"]))


def invalidated_versions(usage: list[dict]) -> list[dict]:
    """The model versions in ``usage`` (see :func:`scan_split_usage`), once each, with their scans."""
    versions: dict[int, dict] = {}
    for row in usage:
        entry = versions.setdefault(
            row["model_version"], {"model_version": row["model_version"], "version": row["version"], "scans": []}
        )
        if row["scan"] not in entry["scans"]:
            entry["scans"].append(row["scan"])
    return sorted(versions.values(), key=lambda v: v["version"])


def split_plan(
    *, project: Project, percentages: dict, seed: int, stratify_by: str = "", scope: str = "unassigned"
) -> dict:
    """What a split rule would do to the project's scans, without doing it (the preview).

    ``scope`` "unassigned" deals only the scans in no split yet; "all" deals every scan again.
    ``stratify_by`` is a metadata column (labeling.metadata.COLUMNS) or "" for none. The same
    arguments on the same scans give the same plan (labeling.splits.allocate), and ``plan_id``
    (a hash of every scan's new split) lets the apply check that the preview still holds.

    Returns ``plan_id``, ``scans`` (in scope), ``counts`` (split -> scans after the rule),
    ``strata`` (per stratum: n and per split), ``changes`` (``{scan, subject_id, session_id,
    from, to}``) and ``frozen`` (changes of scans a model version used: their split is frozen,
    with ``model_versions``).
    """
    import hashlib

    from . import metadata, splits
    from .models import Split

    if stratify_by and stratify_by not in metadata.COLUMNS:
        raise ValueError(f"stratify_by: one of {', '.join(metadata.COLUMNS)}, or empty for none")
    scans = Scan.objects.filter(project=project)
    if scope == "unassigned":
        scans = scans.filter(split=Split.UNASSIGNED)
    elif scope != "all":
        raise ValueError("scope: 'unassigned' or 'all'")
    rows = list(scans.order_by("id").values("id", "subject_id", "session_id", "split", *metadata.COLUMNS))
    stratum = {r["id"]: metadata.group_of(stratify_by, r[stratify_by]) if stratify_by else "all scans" for r in rows}
    dealt = splits.allocate([(r["id"], stratum[r["id"]]) for r in rows], percentages=percentages, seed=seed)
    strata: dict[str, dict] = {}
    for r in rows:
        key = stratum[r["id"]]
        entry = strata.setdefault(key, {"stratum": key, "scans": 0, **dict.fromkeys(splits.SPLITS, 0)})
        entry["scans"] += 1
        entry[dealt[r["id"]]] += 1
    changes = [
        {
            "scan": r["id"],
            "subject_id": r["subject_id"],
            "session_id": r["session_id"],
            "from": r["split"],
            "to": dealt[r["id"]],
        }
        for r in rows
        if r["split"] != dealt[r["id"]]
    ]
    usage = scan_split_usage(project=project, scan_ids=[c["scan"] for c in changes])
    used_by: dict[int, list[dict]] = {}
    for u in usage:
        used_by.setdefault(u["scan"], []).append({k: u[k] for k in ("model_version", "version", "used_as")})
    frozen = [{**c, "model_versions": used_by[c["scan"]]} for c in changes if c["scan"] in used_by]
    after = dict(Scan.objects.filter(project=project).values_list("id", "split"))
    after.update(dealt)
    digest = hashlib.sha256(",".join(f"{i}:{after[i]}" for i in sorted(after)).encode()).hexdigest()[:16]
    return {
        "plan_id": digest,
        "rule": {"percentages": dict(percentages), "seed": seed, "stratify_by": stratify_by, "scope": scope},
        "scans": len(rows),
        "counts": {s: sum(1 for v in after.values() if v == s) for s in Split.values},
        "strata": sorted(strata.values(), key=lambda e: (e["stratum"] == metadata.NOT_RECORDED, e["stratum"])),
        "changes": changes,
        "frozen": frozen,
        "invalidated_model_versions": invalidated_versions(usage),
    }


def metadata_csv_preview(*, project: Project, raw: bytes) -> dict:
    """What a metadata CSV would change, row by row, without changing it (the preview).

    The file as a whole is refused (``InputRefused``) when it is not a CSV of our columns; each
    row is matched to one scan of the project (by ``scan`` id, or ``subject_id`` and, when
    given, ``session_id``) and its cells checked (labeling.metadata.clean_record). Returns
    ``rows`` (``line``, ``scan``, ``subject_id``, ``session_id``, ``changes`` {column: [old,
    new]}, ``errors`` [text]), and the counts ``errors`` (rows with one) and ``changes``.
    """
    from mriannot.fields import MAX_ID

    from . import metadata

    rows = metadata.parse_csv(raw)
    scans = list(Scan.objects.filter(project=project).values("id", "subject_id", "session_id", *metadata.COLUMNS))
    by_id = {s["id"]: s for s in scans}
    by_subject: dict[str, list[dict]] = {}
    for s in scans:
        by_subject.setdefault(s["subject_id"], []).append(s)
    seen: dict[int, int] = {}
    out = []
    for row in rows:
        errors: list[str] = []
        scan = None
        if "_" in row.cells:
            errors.append(row.cells["_"])
        elif "scan" in row.keys:
            text = row.keys["scan"]
            if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_ID:
                scan = by_id.get(int(text))
                if scan is None:
                    errors.append(f"no scan {text} in this project")
            else:
                errors.append(f"scan: {text[:20]!r} is not a scan id")
        elif "subject_id" in row.keys:
            candidates = by_subject.get(row.keys["subject_id"], [])
            if "session_id" in row.keys:
                candidates = [s for s in candidates if s["session_id"] == row.keys["session_id"]]
            if len(candidates) == 1:
                scan = candidates[0]
            elif not candidates:
                errors.append("no scan of this subject" + (" and session" if "session_id" in row.keys else ""))
            else:
                errors.append(
                    f"{len(candidates)} scans match this subject"
                    + (" and session" if "session_id" in row.keys else "; add a session_id column")
                    + ", or name the scan by id in a 'scan' column"
                )
        else:
            errors.append("name the scan: a 'scan' id or a 'subject_id'")
        if scan is not None and scan["id"] in seen:
            errors.append(f"scan {scan['id']} is already set by line {seen[scan['id']]}")
        elif scan is not None:
            seen[scan["id"]] = row.line
        changes = {}
        if "_" not in row.cells:
            try:
                cleaned = metadata.clean_record(row.cells)
            except metadata.MetadataError as error:
                errors.extend(f"{column}: {why}" for column, why in error.errors.items())
                cleaned = {}
            if scan is not None:
                changes = {c: [scan[c], v] for c, v in cleaned.items() if scan[c] != v}
        out.append(
            {
                "line": row.line,
                "scan": scan["id"] if scan else None,
                "subject_id": scan["subject_id"] if scan else row.keys.get("subject_id", ""),
                "session_id": scan["session_id"] if scan else row.keys.get("session_id", ""),
                "changes": changes if not errors else {},
                "errors": errors,
            }
        )
    return {
        "rows": out,
        "errors": sum(1 for r in out if r["errors"]),
        "changes": sum(1 for r in out if r["changes"]),
    }


# --- channels ----------------------------------------------------------------------------------


class MissingChannels(Exception):
    """A scan lacks some of the sequences its project declares (``roles``: which)."""

    def __init__(self, scan_id: int, roles: list[str]) -> None:
        super().__init__(f"scan {scan_id} has no {', '.join(roles)} channel")
        self.roles = roles


def project_channel_roles(*, project: Project, scan: Scan | None = None) -> list[str]:
    """The sequences a project's scans hold, in order; one (the scan's own) when none is declared."""
    if project.channels:
        return list(project.channels)
    return [(scan.sequence if scan is not None and scan.sequence else "T1w")]


def scan_channel_list(*, scan: Scan) -> list[dict]:
    """Every channel of a scan: the declared ones in order (``present`` False when missing), then any other."""
    stored = {channel.role: channel for channel in scan.channels.all()}
    roles = project_channel_roles(project=scan.project, scan=scan)
    rows = [{"role": roles[0], "reference": True, "present": True, "channel": None}]
    for role in [*roles[1:], *(role for role in stored if role not in roles)]:
        channel = stored.get(role)
        rows.append({"role": role, "reference": False, "present": channel is not None, "channel": channel})
    return rows


def scan_channel_files(*, scan: Scan) -> list[tuple[str, object]]:
    """(role, file) of each declared channel of a scan, the scan's image first.

    Raises :class:`MissingChannels` when the scan lacks a declared channel.
    """
    declared = project_channel_roles(project=scan.project, scan=scan)
    rows = [row for row in scan_channel_list(scan=scan) if row["role"] in declared]
    missing = [row["role"] for row in rows if not row["present"]]
    if missing:
        raise MissingChannels(scan.pk, missing)
    return [(row["role"], row["channel"].image if row["channel"] else scan.image) for row in rows]


def scan_channel(*, scan: Scan, role: str) -> ScanChannel | None:
    return scan.channels.filter(role=role).first()

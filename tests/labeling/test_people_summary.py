"""The People page's per-rater summary (issue 17): computed by the server with SQL aggregates, in
a constant number of queries, with the figures the page showed before (computed in Python from
every assignment); and the open assignments it lists, a page with each scan's raters (leads only).
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Min
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from labeling import selectors, services
from labeling.models import AnnotationRevision, Assignment, AssignmentStatus, Membership, Role
from tests import factories
from tests.bench import load_bench


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _get(user, path) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as captured:
        response = _client(user).get(path)
    assert response.status_code == 200, response.content[:300]
    return len(captured.captured_queries), response


def _reference(project) -> list[dict]:
    """The figures as the page computed them before: every assignment read into Python."""
    members = dict(Membership.objects.filter(project=project).values_list("user_id", "role"))
    rows = list(
        Assignment.objects.filter(scan__project=project)
        .annotate(first_saved=Min("revisions__created_at"))
        .values("annotator_id", "status", "submitted_at", "first_saved")
    )
    user_ids = {a["annotator_id"] for a in rows} | {u for u, r in members.items() if r == Role.ANNOTATOR}
    names = dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))
    result = []
    for uid in sorted(user_ids, key=lambda u: names[u]):
        own = [a for a in rows if a["annotator_id"] == uid]
        done = [a for a in own if a["status"] == AssignmentStatus.SUBMITTED]
        durations = sorted(
            (a["submitted_at"] - a["first_saved"]).total_seconds() for a in done if a["first_saved"] is not None
        )
        mid = len(durations) // 2
        median = None
        if durations:
            median = durations[mid] if len(durations) % 2 else (durations[mid - 1] + durations[mid]) / 2
        days = {a["submitted_at"].date() for a in done}
        result.append(
            {
                "user_id": uid,
                "username": names[uid],
                "role": members.get(uid),
                "todo": sum(a["status"] == AssignmentStatus.TODO for a in own),
                "in_progress": sum(a["status"] == AssignmentStatus.IN_PROGRESS for a in own),
                "open": sum(a["status"] != AssignmentStatus.SUBMITTED for a in own),
                "submitted": len(done),
                "median_seconds_per_scan": median,
                "scans_per_day": len(done) / len(days) if days else None,
            }
        )
    return result


# --- a world small enough to check by hand --------------------------------------------------------


def _save(assignment, base=None):
    raw = factories.nifti_bytes(factories.label_array((12, 10, 8), values=(1, 2)), factories.AFFINE)
    revision, _ = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=raw, base_revision_id=base.pk if base else None
    )
    return revision


def test_the_summary_counts_and_times_each_rater_as_the_page_did(world):
    for seed in range(6):  # 12 assignments (2 raters a scan), the least-loaded first: 4 each
        factories.add_scan(world, seed=seed)
    rater1, rater2, _ = world.annotators
    mine = list(Assignment.objects.filter(annotator=rater1).order_by("id"))
    assert len(mine) == 4
    start = timezone.now().replace(hour=8, minute=0, second=0, microsecond=0) - dt.timedelta(days=5)
    # 10 and 40 minutes on one day, 30 on the next, 20 on the third: median (20 + 30) / 2 = 25 min,
    # 4 scans on 3 days. A second save of the first scan does not move its start.
    plan = [(start, 10), (start + dt.timedelta(hours=3), 40), (start + dt.timedelta(days=1), 30)]
    plan.append((start + dt.timedelta(days=2, hours=1), 20))
    for assignment, (began, minutes) in zip(mine, plan, strict=True):
        first = _save(assignment)
        if assignment == mine[0]:
            AnnotationRevision.objects.filter(pk=first.pk).update(created_at=began)
            later = _save(assignment, base=first)
            AnnotationRevision.objects.filter(pk=later.pk).update(created_at=began + dt.timedelta(minutes=5))
        services.assignment_submit(assignment=assignment, actor=rater1)
        AnnotationRevision.objects.filter(pk=first.pk).update(created_at=began)
        Assignment.objects.filter(pk=assignment.pk).update(submitted_at=began + dt.timedelta(minutes=minutes))
    _save(Assignment.objects.filter(annotator=rater2).order_by("id").first())  # one in progress
    # someone who rated and then left the project (no membership): still a row, "former member"
    Membership.objects.filter(project=world.project, user=world.annotators[2]).delete()

    queries, response = _get(world.lead, f"/api/v1/projects/{world.project.pk}/raters/")
    assert queries <= 10
    rows = {r["username"]: r for r in response.json()}
    assert rows["rater1"]["median_seconds_per_scan"] == 25 * 60
    assert rows["rater1"]["scans_per_day"] == pytest.approx(4 / 3)
    assert (rows["rater1"]["todo"], rows["rater1"]["open"], rows["rater1"]["submitted"]) == (0, 0, 4)
    assert (rows["rater2"]["todo"], rows["rater2"]["in_progress"], rows["rater2"]["open"]) == (3, 1, 4)
    assert rows["rater2"]["median_seconds_per_scan"] is None and rows["rater2"]["scans_per_day"] is None
    assert rows["rater3"]["role"] is None and rows["rater3"]["todo"] == 4
    assert response.json() == _reference(world.project)
    assert response["X-Total-Count"] == "3"
    assert _client(rater1).get(f"/api/v1/projects/{world.project.pk}/raters/").status_code == 403


# --- growth -------------------------------------------------------------------------------------


def _bench():
    return load_bench("bench_scale")


def _spread_times(project, seed: int) -> None:
    """Give the bulk loader's submissions distinct first saves and submissions over a few days."""
    rng = random.Random(seed)
    base = timezone.now().replace(microsecond=0) - dt.timedelta(days=10)
    revisions, assignments = [], []
    firsts = AnnotationRevision.objects.filter(assignment__scan__project=project, number=1)
    for revision in firsts.select_related("assignment").order_by("id"):
        revision.created_at = base + dt.timedelta(minutes=rng.randrange(0, 6 * 24 * 60))
        revisions.append(revision)
        if revision.assignment.status == AssignmentStatus.SUBMITTED:
            worked = dt.timedelta(seconds=rng.randrange(60, 3 * 3600), microseconds=rng.randrange(1_000_000))
            revision.assignment.submitted_at = revision.created_at + worked
            assignments.append(revision.assignment)
    # QuerySet.update per row would be slow; bulk_update writes the rows in a few statements
    # (revisions are immutable to the app, not to the database).
    AnnotationRevision.objects.bulk_update(revisions, ["created_at"], batch_size=500)
    Assignment.objects.bulk_update(assignments, ["submitted_at"], batch_size=500)


def _people_calls(base) -> list[tuple[str, str]]:
    p = base["project"].pk
    return [
        ("raters", f"/api/v1/projects/{p}/raters/"),
        ("open assignments", f"/api/v1/assignments/?project={p}&status=open&limit=100"),
        ("flagged scans", f"/api/v1/projects/{p}/scans/?limit=500&status=flagged"),
        ("first scans", f"/api/v1/projects/{p}/scans/?limit=500"),
    ]


def test_the_people_page_calls_do_not_grow_with_the_project_and_match_the_python_figures(db):
    bench = _bench()
    base = bench.make_base(n_annotators=6)
    lead, project = base["lead"], base["project"]
    bench.grow_project(base=base, n_scans=20)
    _spread_times(project, seed=1)
    small = {name: _get(lead, path)[0] for name, path in _people_calls(base)}
    assert _get(lead, f"/api/v1/projects/{project.pk}/raters/")[1].json() == _reference(project)

    bench.grow_project(base=base, n_scans=200)
    _spread_times(project, seed=2)
    for name, path in _people_calls(base):
        queries, response = _get(lead, path)
        assert queries == small[name], f"{name}: {small[name]} queries at 20 scans, {queries} at 200"
        assert queries <= 10, f"{name}: {queries} queries"
        assert len(response.json()) <= 500, name
    rows = _get(lead, f"/api/v1/projects/{project.pk}/raters/")[1].json()
    assert len(rows) == 6  # one row per rater, not per assignment
    assert rows == _reference(project)
    assert sum(r["submitted"] + r["open"] for r in rows) == Assignment.objects.filter(scan__project=project).count()


def test_the_open_assignments_page_names_each_scans_raters_to_its_leads_only(db):
    bench = _bench()
    base = bench.make_base(n_annotators=6)
    bench.grow_project(base=base, n_scans=20)
    project, lead, rater = base["project"], base["lead"], base["annotators"][0]
    url = f"/api/v1/assignments/?project={project.pk}&status=open"
    _, response = _get(lead, url)
    items = response.json()
    expected = Assignment.objects.filter(scan__project=project).exclude(status=AssignmentStatus.SUBMITTED)
    assert int(response["X-Total-Count"]) == expected.count() > 0
    assert all(a["status"] != AssignmentStatus.SUBMITTED for a in items)
    for item in items:
        raters = Assignment.objects.filter(scan_id=item["scan"]).order_by("id")
        assert item["scan_raters"] == [a.annotator.username for a in raters]
        assert item["annotator"] in item["scan_raters"]
    # a rater sees their own open work, never who else rates the scan (blinding)
    own = _get(rater, url)[1].json()
    assert own and {a["annotator"] for a in own} == {rater.username}
    assert all(a["scan_raters"] is None for a in own)
    submitted = _get(lead, f"/api/v1/assignments/?project={project.pk}&status=submitted")[1].json()
    assert submitted and all(a["status"] == AssignmentStatus.SUBMITTED for a in submitted)
    bad = _client(lead).get(f"/api/v1/assignments/?project={project.pk}&status=done")
    assert bad.status_code == 400 and "status" in bad.json()["detail"]
    assert selectors.scan_rater_names(scan_ids=[]) == {}

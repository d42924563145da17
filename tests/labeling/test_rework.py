"""Return for rework, the comment threads of a scan, and what raters may learn of a scan (blinding).

A lead sends one rater's submission back with a comment; the rater sees it, edits on and
resubmits; the consensus of the new submissions decides the scan again. Raters talk to the
leads in the thread of their own assignment and never see another rater's. A rater never
learns how a scan's consensus came out: every endpoint they can read is walked below.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from consensus import fusion
from consensus import services as consensus_services
from consensus.models import ConsensusRun, GroundTruth, GroundTruthSource
from labeling import services
from labeling.models import (
    AnnotationRevision,
    Assignment,
    AssignmentStatus,
    AuditEvent,
    Comment,
    CommentKind,
    ScanStatus,
)
from mriannot.errors import Conflict, ValidationFailed
from mriannot.fields import TEXT_MAX_CHARS
from mriannot.jobs import JobStatus
from tests import factories

pytestmark = pytest.mark.django_db

SHAPE = (24, 20, 16)


def _save(assignment: Assignment, labels: np.ndarray, *, base=None) -> AnnotationRevision:
    raw = factories.nifti_bytes(np.asarray(labels, np.uint8), np.asarray(assignment.scan.affine))
    revision, _ = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=raw, base_revision_id=base.pk if base else None
    )
    return revision


def _run_latest(scan) -> ConsensusRun:
    """Execute the scan's newest queued run here (the tests run no worker)."""
    run = ConsensusRun.objects.filter(scan=scan).order_by("-id").first()
    return consensus_services.consensus_run_execute(run_id=run.pk)


@pytest.fixture
def decided(world):
    """A scan two raters labelled alike: its consensus is clear and became its ground truth."""
    scan = factories.add_scan(world, shape=SHAPE, subject_id="sub-01")
    truth = factories.sphere_truth(SHAPE)
    factories.submit_panel(world, scan, [truth, truth])
    run = _run_latest(scan)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.GROUND_TRUTH and not run.flagged
    first, second = scan.assignments.order_by("id")
    return {"world": world, "scan": scan, "run": run, "truth": truth, "returned": first, "other": second}


def _return(setup, comment: str = "Label 2 misses the lower slices; please look again."):
    world, assignment = setup["world"], setup["returned"]
    return world.client(world.lead).post(
        f"/api/v1/assignments/{assignment.pk}/return/", {"comment": comment}, format="json"
    )


# --- return for rework --------------------------------------------------------------------------


def test_a_lead_returns_a_submission_with_a_comment(decided):
    scan, assignment = decided["scan"], decided["returned"]
    revisions_before = list(AnnotationRevision.objects.filter(assignment=assignment).values_list("pk", "sha256"))

    answer = _return(decided)

    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["status"] == "returned" and body["submitted_at"] is None
    assert body["return_comment"]["text"] == "Label 2 misses the lower slices; please look again."
    assert body["return_comment"]["author"] == "lead"
    assignment.refresh_from_db()
    scan.refresh_from_db()
    assert assignment.status == AssignmentStatus.RETURNED
    assert scan.status == ScanStatus.IN_PROGRESS, "being labelled again: the consensus is not final"
    # The rater's revisions are untouched (immutable), the other rater's submission stands.
    assert list(AnnotationRevision.objects.filter(assignment=assignment).values_list("pk", "sha256")) == (
        revisions_before
    )
    assert Assignment.objects.get(pk=decided["other"].pk).status == AssignmentStatus.SUBMITTED
    comment = Comment.objects.get(assignment=assignment)
    assert (comment.kind, comment.author_username, comment.author_role, comment.scan_id) == (
        CommentKind.RETURN,
        "lead",
        "lead",
        scan.pk,
    )
    event = AuditEvent.objects.get(action="assignment.return")
    assert event.actor_username == "lead" and event.target_id == str(assignment.pk)
    assert event.data == {
        "annotator": assignment.annotator.username,
        "revision": revisions_before[-1][0],
        "comment": comment.pk,
        "scan": scan.pk,
        "scan_status_before": "ground_truth",
    }


@pytest.mark.parametrize("comment", ["", "   \n ", "x" * (TEXT_MAX_CHARS + 1)], ids=["empty", "blank", "too-long"])
def test_the_comment_is_required_and_bounded(decided, comment):
    answer = _return(decided, comment)
    assert answer.status_code == 400
    assert "comment" in answer.json()["fields"]
    # The service refuses it too, whoever calls it.
    with pytest.raises(ValidationFailed):
        services.assignment_return(assignment=decided["returned"], actor=decided["world"].lead, comment=comment)
    assignment = Assignment.objects.get(pk=decided["returned"].pk)
    assert assignment.status == AssignmentStatus.SUBMITTED
    assert not Comment.objects.exists() and not AuditEvent.objects.filter(action="assignment.return").exists()


def test_only_a_lead_returns_and_only_a_submission(decided):
    world, assignment, other = decided["world"], decided["returned"], decided["other"]
    url = f"/api/v1/assignments/{assignment.pk}/return/"
    body = {"comment": "again"}
    assert world.client(assignment.annotator).post(url, body, format="json").status_code == 403
    assert world.client(other.annotator).post(url, body, format="json").status_code == 404  # blinded
    assert world.client(world.outsider).post(url, body, format="json").status_code == 404
    assert world.client().post(url, body, format="json").status_code == 401
    assert world.client(world.site_admin).post(url, body, format="json").status_code == 200
    again = world.client(world.lead).post(url, body, format="json")
    assert again.status_code == 409 and again.json()["error"] == "not_submitted"
    with pytest.raises(Conflict):
        services.assignment_return(assignment=assignment, actor=world.lead, comment="twice")


def test_the_rater_sees_it_first_in_their_worklist_and_on_the_assignment(decided):
    world, scan, assignment = decided["world"], decided["scan"], decided["returned"]
    factories.add_scan(world, shape=SHAPE, seed=3)  # another open scan, for the order
    _return(decided)
    client = world.client(assignment.annotator)
    items = client.get("/api/v1/me/worklist/").json()
    assert items[0]["assignment"] == assignment.pk, "work a lead sent back comes first"
    assert items[0]["status"] == "returned"
    assert items[0]["return_comment"]["text"].startswith("Label 2 misses")
    assert all(item["return_comment"] is None for item in items[1:])
    assert "priority_note" in items[0]
    detail = client.get(f"/api/v1/assignments/{assignment.pk}/").json()
    assert detail["status"] == "returned" and detail["return_comment"]["author"] == "lead"
    # The scan, as the rater sees it, has their assignment's status.
    assert client.get(f"/api/v1/scans/{scan.pk}/").json()["status"] == "returned"


def test_while_returned_nothing_is_final(decided):
    world, scan, run = decided["world"], decided["scan"], decided["run"]
    old_truth = GroundTruth.objects.get(scan=scan)
    _return(decided)
    scan.refresh_from_db()
    assert consensus_services.current_ground_truth(scan=scan) == old_truth, "kept, as history"
    assert consensus_services.final_ground_truth(scan=scan) is None
    # A lead cannot decide it now: the rater has it.
    accepted = world.client(world.lead).post(f"/api/v1/scans/{scan.pk}/ground-truths/", {"run": run.pk}, format="json")
    assert accepted.status_code == 409 and accepted.json()["error"] == "in_rework"
    edited = world.client(world.lead).post(
        f"/api/v1/scans/{scan.pk}/ground-truths/edit/",
        factories.nifti_bytes(decided["truth"], np.asarray(scan.affine)),
        content_type="application/octet-stream",
    )
    assert edited.status_code == 409 and edited.json()["error"] == "in_rework"
    # Exports and training skip it.
    from active_learning.services import _truths
    from consensus.services.exports import _export_sources

    assert _export_sources(world.project, only_adjudicated=False) == []
    scan.split = "train"
    scan.save(update_fields=["split"])
    assert _truths(world.project, "train") == []


def test_a_run_that_finishes_during_the_rework_decides_nothing(decided):
    """A lead's run queued before the return, executed after it: history, not the scan's state."""
    world, scan = decided["world"], decided["scan"]
    rerun, queued = consensus_services.consensus_run_request(scan=scan, actor=world.lead, method="majority_vote")
    assert queued
    _return(decided)
    consensus_services.consensus_run_execute(run_id=rerun.pk)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.IN_PROGRESS
    assert GroundTruth.objects.filter(scan=scan).count() == 1


def test_resubmission_reruns_the_consensus_on_the_new_revision(decided, django_capture_on_commit_callbacks):
    world, scan, assignment = decided["world"], decided["scan"], decided["returned"]
    old_truth = GroundTruth.objects.get(scan=scan)
    submitted = AnnotationRevision.objects.filter(assignment=assignment).order_by("-number").first()
    _return(decided)
    assignment.refresh_from_db()

    # The rater edits on from the submitted revision; the assignment stays returned until submitted.
    edited = decided["truth"].copy()
    edited[:, :, :1] = 0
    revision = _save(assignment, edited, base=submitted)
    assert revision.base_id == submitted.pk and revision.number == submitted.number + 1
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.RETURNED

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        answer = world.client(assignment.annotator).post(
            f"/api/v1/assignments/{assignment.pk}/submit/", {"revision": revision.pk}, format="json"
        )
    assert answer.status_code == 200 and answer.json()["status"] == "submitted"
    assert answer.json()["return_comment"] is None
    assert len(callbacks) == 1, "the consensus is queued again"
    new_run = ConsensusRun.objects.filter(scan=scan).order_by("-id").first()
    assert new_run.pk != decided["run"].pk and new_run.status == JobStatus.QUEUED
    assert new_run.revision_ids == [revision.pk, decided["run"].revision_ids[1]], "the latest revision of each rater"
    assert AuditEvent.objects.filter(action="assignment.submit", data__resubmission=True).count() == 1

    _run_latest(scan)
    scan.refresh_from_db()
    truth = consensus_services.final_ground_truth(scan=scan)
    assert scan.status == ScanStatus.GROUND_TRUTH
    assert (truth.run_id, truth.source, truth.supersedes_id) == (new_run.pk, GroundTruthSource.CONSENSUS, old_truth.pk)


def test_a_flagged_consensus_after_rework_waits_for_a_lead(decided, monkeypatch):
    world, scan, assignment = decided["world"], decided["scan"], decided["returned"]
    old_truth = GroundTruth.objects.get(scan=scan)
    _return(decided)
    submitted = AnnotationRevision.objects.filter(assignment=assignment).order_by("-number").first()
    _save(assignment, np.roll(decided["truth"], 3, axis=0), base=submitted)
    services.assignment_submit(assignment=assignment, actor=assignment.annotator)
    monkeypatch.setattr(fusion, "UNCERTAIN_BELOW", 1.01)  # every labelled voxel unsure: flagged
    world.project.ambiguity_threshold = 0.0
    world.project.save()
    run = _run_latest(scan)
    scan.refresh_from_db()
    assert run.flagged and scan.status == ScanStatus.FLAGGED
    assert consensus_services.current_ground_truth(scan=scan) == old_truth
    assert consensus_services.final_ground_truth(scan=scan) is None, "the earlier truth is not final"
    accepted = world.client(world.lead).post(f"/api/v1/scans/{scan.pk}/ground-truths/", {"run": run.pk}, format="json")
    assert accepted.status_code == 201 and accepted.json()["supersedes"] == old_truth.pk
    scan.refresh_from_db()
    assert consensus_services.final_ground_truth(scan=scan).run_id == run.pk


def test_resubmitting_unchanged_lets_the_same_run_decide_again(decided, django_capture_on_commit_callbacks):
    scan, assignment = decided["scan"], decided["returned"]
    _return(decided)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.assignment_submit(assignment=assignment, actor=assignment.annotator)
    assert callbacks == [], "the same submissions: no new run"
    assert ConsensusRun.objects.filter(scan=scan).count() == 1
    scan.refresh_from_db()
    assert scan.status == ScanStatus.GROUND_TRUTH, "its truth was made from exactly these submissions"
    assert GroundTruth.objects.filter(scan=scan).count() == 1
    assert AuditEvent.objects.filter(action="consensus.reapply").exists()


# --- comments -----------------------------------------------------------------------------------


@pytest.fixture
def thread(world):
    """One scan, two raters on it (``own`` and ``corater``), a third rater elsewhere."""
    scan = factories.add_scan(world)
    own, corater = scan.assignments.order_by("id")
    other = next(u for u in world.annotators if u.pk not in (own.annotator_id, corater.annotator_id))
    return {"world": world, "scan": scan, "own": own, "corater": corater, "other": other}


def _comments(client, scan, **query):
    suffix = "".join(f"?{k}={v}" for k, v in query.items())
    answer = client.get(f"/api/v1/scans/{scan.pk}/comments/{suffix}")
    assert answer.status_code == 200, answer.json()
    return [(c["author"], c["text"]) for c in answer.json()]


def test_a_rater_and_the_leads_talk_on_the_raters_assignment(thread):
    world, scan, own, corater = thread["world"], thread["scan"], thread["own"], thread["corater"]
    rater, corater_user = own.annotator, corater.annotator
    url = f"/api/v1/scans/{scan.pk}/comments/"

    asked = world.client(rater).post(url, {"text": "Is the cyst CSF?"}, format="json")
    assert asked.status_code == 201, asked.json()
    assert asked.json()["assignment"] == own.pk and asked.json()["from_lead"] is False
    answered = world.client(world.lead).post(url, {"text": "Yes, label it CSF.", "assignment": own.pk}, format="json")
    assert answered.status_code == 201 and answered.json()["from_lead"] is True
    assert answered.json()["rater"] == rater.username
    world.client(corater_user).post(url, {"text": "Where does the cortex end?"}, format="json")
    note = world.client(world.lead).post(url, {"text": "Leads only: rater2 is slow."}, format="json")
    assert note.status_code == 201 and note.json()["assignment"] is None

    # Each rater sees only their own thread; the leads see every comment.
    assert _comments(world.client(rater), scan) == [
        (rater.username, "Is the cyst CSF?"),
        ("lead", "Yes, label it CSF."),
    ]
    assert _comments(world.client(corater_user), scan) == [(corater_user.username, "Where does the cortex end?")]
    assert len(_comments(world.client(world.lead), scan)) == 4
    assert len(_comments(world.client(world.lead), scan, assignment=own.pk)) == 2
    assert _comments(world.client(corater_user), scan, assignment=own.pk) == []
    assert world.client(thread["other"]).get(url).status_code == 404
    assert world.client(world.outsider).get(url).status_code == 404
    assert AuditEvent.objects.filter(action="comment.create").count() == 4
    assert dict(Comment.objects.values_list("text", "author_role"))["Is the cyst CSF?"] == "annotator"


def test_a_rater_cannot_write_into_another_raters_thread(thread):
    world, scan, own, corater = thread["world"], thread["scan"], thread["own"], thread["corater"]
    url = f"/api/v1/scans/{scan.pk}/comments/"
    answer = world.client(corater.annotator).post(url, {"text": "hi", "assignment": own.pk}, format="json")
    assert answer.status_code == 404
    assert world.client(thread["other"]).post(url, {"text": "hi"}, format="json").status_code == 404
    # A lead names an assignment of this scan, not of another.
    elsewhere = factories.add_scan(thread["world"], seed=5).assignments.first()
    wrong = world.client(world.lead).post(url, {"text": "hi", "assignment": elsewhere.pk}, format="json")
    assert wrong.status_code == 404
    assert not Comment.objects.exists()


@pytest.mark.parametrize("text", ["", "  ", "x" * (TEXT_MAX_CHARS + 1)])
def test_a_comment_is_bounded_text(thread, text):
    world, scan = thread["world"], thread["scan"]
    answer = world.client(thread["own"].annotator).post(f"/api/v1/scans/{scan.pk}/comments/", {"text": text})
    assert answer.status_code == 400
    assert not Comment.objects.exists()


def test_comments_are_immutable(thread):
    comment = services.comment_create(scan=thread["scan"], actor=thread["own"].annotator, text="first")
    comment.text = "changed"
    with pytest.raises(RuntimeError, match="immutable"):
        comment.save()
    with pytest.raises(RuntimeError, match="never deleted"):
        comment.delete()


# --- blinding: a rater never learns how a scan's consensus came out -----------------------------

#: What a rater must never read anywhere: the scan states a consensus sets, and its figures.
CONSENSUS_STATES = {ScanStatus.CONSENSUS, ScanStatus.FLAGGED, ScanStatus.GROUND_TRUTH}
CONSENSUS_KEYS = {"flagged", "flag_reasons", "ambiguity", "ground_truth", "latest_run", "agreement"}


def _routes(resolver: URLResolver, prefix: str = ""):
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _routes(entry, route)
        elif isinstance(entry, URLPattern):
            yield route


API_ROUTES = [route for route in _routes(get_resolver()) if route.startswith("api/v1/")]


def _leaks(value, path="") -> list[str]:
    """Every place in a JSON body that tells how a consensus came out."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in CONSENSUS_KEYS:
                found.append(where)
            if "status" in key and item in CONSENSUS_STATES:
                found.append(f"{where}={item}")
            found += _leaks(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _leaks(item, f"{path}[{i}]")
    return found


def test_a_rater_never_reads_a_scans_consensus_status(world, monkeypatch):
    """Every GET of the API, as a rater, on scans whose consensus is clear (ground truth), flagged,
    and back in rework: no answer names a consensus state or figure. A new endpoint that leaks it
    fails here."""
    truth = factories.sphere_truth(SHAPE)
    clear = factories.add_scan(world, shape=SHAPE, seed=1)
    factories.submit_panel(world, clear, [truth, truth])
    _run_latest(clear)
    flagged = factories.add_scan(world, shape=SHAPE, seed=2)
    factories.submit_panel(world, flagged, [truth, np.roll(truth, 4, axis=0)])
    monkeypatch.setattr(fusion, "UNCERTAIN_BELOW", 1.01)
    world.project.ambiguity_threshold = 0.0
    world.project.save()
    _run_latest(flagged)
    clear.refresh_from_db()
    flagged.refresh_from_db()
    assert (clear.status, flagged.status) == (ScanStatus.GROUND_TRUTH, ScanStatus.FLAGGED)
    rater = clear.assignments.order_by("id").first().annotator
    assert flagged.assignments.filter(annotator=rater).exists(), "the rater rates both scans"
    services.comment_create(scan=flagged, actor=rater, text="done")

    client = world.client(rater)
    mine = Assignment.objects.filter(annotator=rater)
    values = {
        "project_id": [world.project.pk],
        "scan_id": [clear.pk, flagged.pk],
        "assignment_id": list(mine.values_list("pk", flat=True)),
        "revision_id": list(AnnotationRevision.objects.filter(assignment__in=mine).values_list("pk", flat=True)),
        "run_id": list(ConsensusRun.objects.values_list("pk", flat=True)),
        "truth_id": list(GroundTruth.objects.values_list("pk", flat=True)),
        "label_id": list(world.project.label_classes.values_list("pk", flat=True)),
        "member_id": list(world.project.memberships.values_list("pk", flat=True)),
    }
    read, leaks = [], []
    for route in API_ROUTES:
        names = re.findall(r"<id:(\w+)>", route)
        combos = [{}]
        for name in names:
            combos = [{**c, name: v} for c in combos for v in values.get(name, [1])]
        for combo in combos:
            path = "/" + re.sub(r"<id:(\w+)>", lambda m, combo=combo: str(combo[m.group(1)]), route)
            for query in ("", f"?project={world.project.pk}", f"?scan={flagged.pk}"):
                answer = client.get(path + query)
                if answer.status_code != 200 or not answer.get("Content-Type", "").startswith("application/json"):
                    continue
                read.append(path + query)
                leaks += [f"{path}{query}: {leak}" for leak in _leaks(answer.json())]
    assert leaks == []
    # The walk did read what a rater reads: their scans, worklist, assignments and comments.
    for must in ("/api/v1/me/worklist/", f"/api/v1/scans/{flagged.pk}/", f"/api/v1/scans/{flagged.pk}/comments/"):
        assert must in read, must
    assert f"/api/v1/projects/{world.project.pk}/scans/" in read
    scans = {s["id"]: s["status"] for s in client.get(f"/api/v1/projects/{world.project.pk}/scans/").json()}
    assert scans == {clear.pk: "submitted", flagged.pk: "submitted"}, "their own assignment's status"
    # A lead of the project sees the real states.
    lead_scans = world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/scans/").json()
    assert {s["id"]: s["status"] for s in lead_scans} == {clear.pk: "ground_truth", flagged.pk: "flagged"}

"""A lead runs a whole project from the browser, end to end, in headless Chromium against the real
server and a real Celery worker on a real Redis:

1. starts from nothing and creates a project (two raters per scan) with three labels;
2. adds three annotators;
3. drops five files on the Scans page in one go, one of them malformed: its row says why, and
   nothing of it is stored; deals the scans 60/20/20 by rule;
4. the annotators label in the viewer (brush strokes) and submit, each submit opening their next
   scan of the project; the worker fuses every scan's submissions;
5. the lead watches the progress move on the project home;
6. sends one submission back with a comment; the rater finds it first in their worklist with the
   comment and in the viewer's banner, edits and resubmits;
7. the consensus reruns on the new submission (the worker) and decides the scan again.

Volumes are 12x10x8 voxels of 2 mm, so the whole story runs in a minute or two. Every page is
saved under artifacts/screenshots/ (test_lead_runs_a_project_end_to_end-<step>.png).
"""

from __future__ import annotations

from collections import Counter

import pytest

from consensus import services as consensus_services
from consensus.models import ConsensusRun
from labeling.models import (
    Assignment,
    AssignmentStatus,
    AuditEvent,
    LabelClass,
    Membership,
    Project,
    Scan,
    ScanStatus,
)
from mriannot.jobs import JobStatus
from tests import factories
from tests.frontend.helpers import latest_revision, log_in, wait_ready, wait_state
from tests.frontend.lead_helpers import purge_queues
from tests.frontend.test_scans_page import BROKEN, drop_files, open_scans_page, wait_uploads_done
from tests.frontend.test_workflow import paint

pytestmark = [pytest.mark.browser, pytest.mark.celery]

SHAPE = (12, 10, 8)  # with factories.AFFINE: 2 mm voxels
ANNOTATORS = ("ann1", "ann2", "ann3")


@pytest.fixture
def e2e_world(transactional_db, local_queue, request):
    """Nothing but accounts: a site admin who will lead (a first project needs one) and three
    annotators an admin made; and a real Celery worker."""
    lead = factories.UserFactory(username="lead", is_staff=True)
    annotators = [factories.UserFactory(username=name) for name in ANNOTATORS]
    purge_queues(local_queue)  # messages of earlier tests name rows that are gone
    request.getfixturevalue("celery_worker")
    return {"lead": lead, "annotators": annotators}


def ready(page) -> None:
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#page-error")


def says(page, element_id: str, text: str) -> None:
    page.wait_for_function(
        "([id, text]) => document.getElementById(id).textContent.includes(text)", arg=[element_id, text]
    )


def log_out(page) -> None:
    page.click("#logout")
    page.wait_for_url("**/login/")


def home_counts(page, base: str, project: Project) -> dict[str, str]:
    page.goto(f"{base}/projects/{project.pk}/")
    ready(page)
    return {name: page.inner_text(f"#count-{name}") for name in ("scans", "submitted", "flagged", "ground-truth")}


def label_every_open_scan(page, base: str, username: str, shot) -> int:
    """Log in as the annotator and label their scans one after the other: open the next, draw,
    submit (which opens the next scan of the project) until none is left. Returns how many."""
    log_in(page, base, username, factories.PASSWORD)
    page.click("#open-next")
    done = 0
    while "/annotate/" in page.url:
        wait_ready(page)
        wait_state(page, "saved")
        page.keyboard.press("a")
        paint(page, "1", y=0.5)
        wait_state(page, "saved")
        if done == 0:
            shot(page, f"viewer-{username}")
        here = page.url
        page.click("#submit")
        page.click("#submit-confirm")
        page.wait_for_url(lambda url, here=here: url != here)  # the next scan, or the worklist when none is left
        done += 1
    says(page, "page-note", "There is no open scan left in")
    log_out(page)
    return done


def test_lead_runs_a_project_end_to_end(live_server, page, e2e_world, stored_files, shot):
    base = live_server.url

    # --- 1. a project from nothing, with three labels ---------------------------------------------
    log_in(page, base, "lead", factories.PASSWORD)
    page.goto(f"{base}/projects/")
    ready(page)
    assert page.inner_text("#projects-summary") == "No project yet."
    page.fill("#new-name", "Hippocampus study")
    page.fill("#new-description", "End-to-end: three labels, two raters per scan.")
    page.fill("#new-raters", "2")
    shot(page, "projects")
    page.click("#create-button")
    page.wait_for_url("**/settings/?created=1")
    ready(page)
    project = Project.objects.get(name="Hippocampus study")
    assert project.raters_per_scan == 2
    for name, colour in (("CSF", "#3366ff"), ("Grey matter", "#22aa55"), ("Hippocampus", "#ff5500")):
        page.fill("#label-name", name)
        page.fill("#label-color", colour)
        page.click("#label-add")
        says(page, "labels-result", f"Added “{name}”")
    assert list(LabelClass.objects.filter(project=project).values_list("value", "name")) == [
        (1, "CSF"),
        (2, "Grey matter"),
        (3, "Hippocampus"),
    ]
    shot(page, "settings")

    # --- 2. three annotators -------------------------------------------------------------------------
    page.goto(f"{base}/projects/{project.pk}/people/")
    ready(page)
    for username in ANNOTATORS:
        page.fill("#member-username", username)
        page.select_option("#member-role", "annotator")
        page.click("#member-add")
        says(page, "people-result", f"Added {username} as annotator.")
    members = Membership.objects.filter(project=project, role="annotator").values_list("user__username", flat=True)
    assert set(members) == set(ANNOTATORS)
    shot(page, "people")

    # --- 3. five files in one drop, one malformed; splits 60/20/20 --------------------------------------
    open_scans_page(page, base, project.pk)
    good = {
        f"sub-0{i}.nii.gz": factories.nifti_bytes(factories.image_array(SHAPE, seed=i), factories.AFFINE)
        for i in (1, 2, 3, 4)
    }
    files = {"sub-01.nii.gz": good["sub-01.nii.gz"], "broken.nii.gz": BROKEN, **good}
    drop_files(page, files)
    wait_uploads_done(page, 5)
    states = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#upload-body tr')].map((r) => [r.dataset.file, r.dataset.state]))"
    )
    assert states == {**dict.fromkeys(good, "stored"), "broken.nii.gz": "refused"}
    reason = page.inner_text('#upload-body tr[data-file="broken.nii.gz"] td:last-child')
    assert reason.startswith("Refused: ") and len(reason) > len("Refused: ") + 10, reason
    scans = list(Scan.objects.filter(project=project).order_by("id"))
    assert sorted(s.original_filename for s in scans) == sorted(good)
    assert len([f for f in stored_files() if f.startswith("scans/")]) == 4, "nothing of the malformed file"
    assert Assignment.objects.filter(scan__project=project).count() == 8, "two raters per scan"
    shot(page, "scans-uploaded")

    page.click("#split-preview")  # the form starts at 60/20/20
    page.wait_for_selector("#split-preview-box:not([hidden])")
    page.click("#split-apply")
    page.wait_for_selector("#split-result:not([hidden])")
    splits = Counter(Scan.objects.filter(project=project).values_list("split", flat=True))
    assert sum(splits.values()) == 4
    for split, share in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
        assert abs(splits[split] - 4 * share) < 1, splits  # within one scan of its share
    shot(page, "scans-split")

    assert home_counts(page, base, project) == {"scans": "4", "submitted": "0", "flagged": "0", "ground-truth": "0"}
    shot(page, "home-before")
    log_out(page)

    # --- 4. the annotators label and submit; the worker fuses each scan ----------------------------------
    labelled = {name: label_every_open_scan(page, base, name, shot) for name in ANNOTATORS}
    assert labelled == dict(Counter(a.annotator.username for a in Assignment.objects.filter(scan__project=project)))
    assert not Assignment.objects.filter(scan__project=project).exclude(status=AssignmentStatus.SUBMITTED).exists()
    factories.wait_for(
        lambda: ConsensusRun.objects.filter(scan__project=project, status=JobStatus.DONE).count() == 4,
        what="the four consensus runs",
    )
    decided = Counter(Scan.objects.filter(project=project).values_list("status", flat=True))
    assert decided[ScanStatus.GROUND_TRUTH] + decided[ScanStatus.FLAGGED] == 4

    # --- 5. progress on the project home --------------------------------------------------------------
    log_in(page, base, "lead", factories.PASSWORD)
    counts = home_counts(page, base, project)
    assert counts == {
        "scans": "4",
        "submitted": "4",
        "flagged": str(decided[ScanStatus.FLAGGED]),
        "ground-truth": str(decided[ScanStatus.GROUND_TRUTH]),
    }
    assert page.evaluate("document.getElementById('progress-bar').value") == decided[ScanStatus.GROUND_TRUTH] / 4
    shot(page, "home-labelled")

    # --- 6. one submission goes back with a comment ------------------------------------------------------
    returned = Assignment.objects.filter(scan__project=project, annotator__username="ann1").order_by("id").first()
    scan = returned.scan
    first_run = ConsensusRun.objects.get(scan=scan)
    page.goto(f"{base}/review/{scan.pk}/")
    ready(page)
    page.click(f'#submissions-body button[data-assignment="{returned.pk}"]')
    page.fill("#return-comment", "The CSF stroke misses the lower slices: please extend it.")
    page.click("#return-confirm")
    page.wait_for_selector(f"body[data-returned='{returned.pk}']")
    scan.refresh_from_db()
    assert scan.status == ScanStatus.IN_PROGRESS
    assert consensus_services.final_ground_truth(scan=scan) is None, "nothing final while it is back"
    shot(page, "review-sent-back")
    log_out(page)

    # --- the rater sees it, edits and resubmits ------------------------------------------------------------
    log_in(page, base, "ann1", factories.PASSWORD)
    row = page.locator("#worklist-body tr[data-assignment]").first
    assert row.get_attribute("data-assignment") == str(returned.pk) and row.get_attribute("data-status") == "returned"
    assert "The CSF stroke misses the lower slices" in row.inner_text()
    shot(page, "worklist-returned")
    page.click("#open-next")
    page.wait_for_url(f"**/annotate/{returned.pk}/")
    wait_ready(page)
    assert "The CSF stroke misses the lower slices" in page.inner_text("#return-notice")
    wait_state(page, "saved")
    page.keyboard.press("a")
    paint(page, "1", y=0.6)
    wait_state(page, "saved")
    resubmitted = latest_revision(returned)
    shot(page, "viewer-returned")
    page.click("#submit")
    page.click("#submit-confirm")
    page.wait_for_url("**/?done=1&project=*")
    log_out(page)

    # --- 7. the consensus reruns on the new submission -----------------------------------------------------
    rerun = factories.wait_for(
        lambda: next(
            (
                r
                for r in ConsensusRun.objects.filter(scan=scan, status=JobStatus.DONE)
                if resubmitted.pk in r.revision_ids
            ),
            None,
        ),
        what="the consensus of the resubmission",
    )
    assert rerun.pk != first_run.pk and first_run.revision_ids != rerun.revision_ids
    scan.refresh_from_db()
    assert scan.status in (ScanStatus.GROUND_TRUTH, ScanStatus.FLAGGED)
    if scan.status == ScanStatus.GROUND_TRUTH:
        assert consensus_services.final_ground_truth(scan=scan).run_id == rerun.pk
    assert AuditEvent.objects.filter(project=project, action="assignment.return").count() == 1
    assert AuditEvent.objects.filter(project=project, action="assignment.submit", data__resubmission=True).count() == 1

    log_in(page, base, "lead", factories.PASSWORD)
    page.goto(f"{base}/review/{scan.pk}/")
    ready(page)
    assert page.evaluate("document.body.dataset.run") == str(rerun.pk), "the newest run is shown"
    assert page.locator("#runs-body tr[data-run]").count() == 2
    assert page.get_attribute(f'#submissions-body tr[data-assignment="{returned.pk}"]', "data-status") == "submitted"
    shot(page, "review-rerun")

"""Return for rework and the comment threads, in headless Chromium: a lead sends one submission back
from the review page (a comment is required), the rater finds it first in their worklist with the
comment, sees the banner in the viewer, answers in the thread, edits and resubmits; another rater
of the same scan never sees that thread. (The consensus rerun through a real worker is in
test_console_e2e.py.)"""

from __future__ import annotations

import pytest

from consensus.models import ConsensusRun
from labeling.models import Assignment, AssignmentStatus, Comment, ScanStatus
from mriannot.jobs import JobStatus
from tests import factories
from tests.frontend.helpers import latest_revision, log_in, open_assignment, wait_state
from tests.frontend.lead_helpers import rated_project
from tests.frontend.test_workflow import paint

pytestmark = pytest.mark.browser


@pytest.fixture
def rework_world(transactional_db, local_queue):
    """Three raters submitted one scan; its consensus ran (no worker: what the pages queue waits)."""
    world = rated_project(n_raters=3, n_scans=1, drifting="rater3")
    scan = world.project.scans.get()
    assignments = {a.annotator.username: a for a in Assignment.objects.filter(scan=scan)}
    return {"world": world, "scan": scan, "assignments": assignments}


def open_review(page, base_url: str, scan_id: int) -> None:
    page.goto(f"{base_url}/review/{scan_id}/")
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#page-error")


def comment_texts(page) -> list[str]:
    return page.locator("#comments li[data-comment] .comment-text").all_inner_texts()


def log_out(page) -> None:
    page.click("#logout")
    page.wait_for_url("**/login/")


def test_send_back_comment_rework_and_resubmit(live_server, page, rework_world, shot):
    scan = rework_world["scan"]
    rater3 = rework_world["assignments"]["rater3"]
    base = live_server.url
    runs_before = ConsensusRun.objects.filter(scan=scan).count()

    # --- the lead sends rater3's submission back from the review page ----------------------------
    log_in(page, base, "lead", factories.PASSWORD)
    open_review(page, base, scan.pk)
    rows = page.locator("#submissions-body tr[data-assignment]")
    assert rows.count() == 3
    assert page.locator('#submissions-body tr[data-status="submitted"] button').count() == 3
    page.click(f'#submissions-body button[data-assignment="{rater3.pk}"]')
    assert page.is_visible("#return-form") and page.inner_text("#return-rater") == "rater3"
    page.click("#return-confirm")  # no comment: refused in the page, nothing sent
    assert "Write why" in page.inner_text("#return-result")
    assert Assignment.objects.get(pk=rater3.pk).status == AssignmentStatus.SUBMITTED
    page.fill("#return-comment", "Your grey matter stops short of the cortex; please extend it.")
    page.click("#return-confirm")
    page.wait_for_selector(f"body[data-returned='{rater3.pk}']")
    assert "Sent back to rater3" in page.inner_text("#return-result")
    assert page.get_attribute(f'#submissions-body tr[data-assignment="{rater3.pk}"]', "data-status") == "returned"
    assert "Back with rater3" in page.inner_text("#rework-state")
    assert page.is_disabled("#accept") and page.is_disabled("#edit-start"), "nothing is decided during rework"
    scan.refresh_from_db()
    assert scan.status == ScanStatus.IN_PROGRESS
    assert comment_texts(page) == ["Your grey matter stops short of the cortex; please extend it."]

    # A note to rater1's thread, and one for the leads only.
    page.select_option("#comment-target", str(rework_world["assignments"]["rater1"].pk))
    page.fill("#comment-text", "Nice work on this one.")
    page.click("#comment-send")
    page.wait_for_selector("#comments[data-count='2']")
    page.select_option("#comment-target", "")
    page.fill("#comment-text", "Leads: rater3 drifts on every scan.")
    page.click("#comment-send")
    page.wait_for_selector("#comments[data-count='3']")
    assert "leads only" in page.inner_text("#comments")
    shot(page, "review-sent-back")
    log_out(page)

    # --- rater3: first in the worklist, with the comment; the banner in the viewer -----------------
    log_in(page, base, "rater3", factories.PASSWORD)
    row = page.locator("#worklist-body tr[data-assignment]").first
    assert row.get_attribute("data-assignment") == str(rater3.pk)
    assert row.get_attribute("data-status") == "returned"
    assert "Returned" in row.inner_text() and "lead: Your grey matter stops short" in row.inner_text()
    assert "sent back to you" in page.inner_text("#worklist-summary")
    assert page.inner_text(".priority-note").startswith("Why this order:")
    shot(page, "worklist-returned")
    row.locator("a").click()
    page.wait_for_url(f"**/annotate/{rater3.pk}/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.is_visible("#return-notice")
    assert page.inner_text("#return-text") == "Your grey matter stops short of the cortex; please extend it."
    assert page.inner_text("#return-author") == "lead"
    # Their thread only: not the lead's note to rater1, not the leads' own note.
    page.wait_for_selector("#comments[data-count='1']")
    assert comment_texts(page) == ["Your grey matter stops short of the cortex; please extend it."]
    page.fill("#comment-text", "Extended it on the upper slices.")
    page.click("#comment-send")
    page.wait_for_selector("#comments[data-count='2']")
    shot(page, "viewer-returned")

    # Edit on top of the submitted revision, and submit again.
    submitted = latest_revision(rater3)
    wait_state(page, "saved")
    page.keyboard.press("a")
    paint(page, "2")
    wait_state(page, "saved")
    edited = latest_revision(rater3)
    assert edited.base_id == submitted.pk
    page.click("#submit")
    page.click("#submit-confirm")
    page.wait_for_url("**/?done=1&project=*")
    rater3.refresh_from_db()
    scan.refresh_from_db()
    assert rater3.status == AssignmentStatus.SUBMITTED and scan.status == ScanStatus.SUBMITTED
    rerun = ConsensusRun.objects.filter(scan=scan).order_by("-id").first()
    assert ConsensusRun.objects.filter(scan=scan).count() == runs_before + 1
    assert rerun.status == JobStatus.QUEUED and edited.pk in rerun.revision_ids, "the consensus of the new submission"
    log_out(page)

    # --- rater1 sees the lead's note to them, nothing of rater3's thread ---------------------------
    log_in(page, base, "rater1", factories.PASSWORD)
    open_assignment(page, base, rework_world["assignments"]["rater1"].pk)
    page.wait_for_selector("#comments[data-count='1']")
    assert comment_texts(page) == ["Nice work on this one."]
    assert page.is_hidden("#return-notice")
    assert Comment.objects.filter(scan=scan).count() == 4

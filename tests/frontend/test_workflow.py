"""The annotation workflow in headless Chromium: log-in, worklist, conflict, offline, submit, blinding."""

from __future__ import annotations

import numpy as np
import pytest

from labeling import services
from labeling.models import Assignment, AssignmentStatus
from tests import factories
from tests.frontend.helpers import (
    canvas_point,
    drawing,
    latest_revision,
    log_in,
    open_assignment,
    revision_labels,
    stroke,
    wait_ready,
    wait_state,
)

pytestmark = pytest.mark.browser


def save_elsewhere(assignment: Assignment, *, value: int, base, box=(slice(5, 9), slice(5, 9), slice(5, 9))):
    """Another tab of the same annotator saves a revision (straight through the service)."""
    scan = assignment.scan
    labels = np.zeros(tuple(scan.shape), np.uint8)
    labels[box] = value
    raw = factories.nifti_bytes(labels, np.asarray(scan.affine))
    revision, _ = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=raw, base_revision_id=base.pk if base else None
    )
    return revision, labels


def paint(page, label_key: str, y: float = 0.5) -> None:
    page.keyboard.press("b")
    page.keyboard.press(label_key)
    stroke(page, canvas_point(page, 0.44, y), canvas_point(page, 0.56, y))


def test_logout_lands_on_the_login_page_even_with_a_request_in_flight(live_server, page, viewer_world):
    """A page's request that fails with 401 because the user just logged out must not send the browser
    to a log-in page that would come back to the page they left."""
    log_in(page, live_server.url, "rater1", viewer_world["password"])
    held = {}
    # Hold the worklist's request, and the log-in page's load after the log-out, so that the worklist
    # request fails (401) while the browser is on its way to the log-in page.
    page.route("**/api/v1/me/worklist/**", lambda route: held.setdefault("worklist", route))
    page.route("**/login/", lambda route: held.setdefault("login", route))
    page.goto(f"{live_server.url}/", wait_until="commit")
    page.wait_for_selector("#logout:not([hidden])")
    while "worklist" not in held:
        page.wait_for_timeout(50)
    page.click("#logout")
    while "login" not in held:
        page.wait_for_timeout(50)
    page.unroute("**/login/")
    held["worklist"].continue_()
    held["login"].continue_()
    page.wait_for_selector("#login-button")
    assert page.url == f"{live_server.url}/login/"


def test_login_worklist_and_logout(live_server, page, viewer_world, shot):
    world = viewer_world
    page.goto(f"{live_server.url}/")
    page.wait_for_url("**/login/?next=%2F")
    page.fill("#username", "rater1")
    page.fill("#password", "not the password")
    page.click("#login-button")
    page.wait_for_selector("#login-error:has-text('wrong password')")

    page.fill("#password", world["password"])
    page.click("#login-button")
    page.wait_for_selector("#worklist-body tr[data-assignment]")
    rows = page.locator("#worklist-body tr[data-assignment]")
    assert [int(rows.nth(i).get_attribute("data-assignment")) for i in range(rows.count())] == [
        a.pk for a in world["mine"]
    ], "rater1's own assignments, highest priority first"
    assert page.inner_text("#worklist-body tr[data-assignment] >> nth=0").split("\t")[2] == "To do"
    assert page.is_visible("#simulated-notice")
    assert "sub-01" in page.inner_text("#worklist-body")
    shot(page, "worklist")

    page.click("#logout")
    page.wait_for_url("**/login/")
    # Logged out for real: a viewer address sends you to log in, and back there afterwards.
    target = world["mine"][1].pk
    page.goto(f"{live_server.url}/annotate/{target}/")
    page.wait_for_url(f"**/login/?next=%2Fannotate%2F{target}%2F")
    page.fill("#username", "rater1")
    page.fill("#password", world["password"])
    page.click("#login-button")
    page.wait_for_url(f"**/annotate/{target}/")
    wait_ready(page)
    assert page.inner_text("#scan-title").startswith("sub-02")


def test_conflict_keep_mine_then_reload_theirs(live_server, page, viewer_world, shot):
    world = viewer_world
    assignment = world["mine"][0]
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    page.keyboard.press("a")
    paint(page, "1", y=0.45)
    wait_state(page, "saved")
    first = latest_revision(assignment)

    # Another tab saves on top of it; our next save names a stale base and gets 409.
    theirs, _ = save_elsewhere(assignment, value=4, base=first)
    paint(page, "2", y=0.55)
    wait_state(page, "conflict")
    assert page.is_visible("#conflict-dialog")
    assert f"revision {theirs.pk}" in page.inner_text("#conflict-text")
    shot(page, "conflict")

    page.click("#conflict-keep")
    wait_state(page, "saved")
    kept = latest_revision(assignment)
    assert kept.base_id == theirs.pk, "mine is saved as a new revision on top of theirs"
    mine = drawing(page)
    np.testing.assert_array_equal(revision_labels(kept), mine)
    assert set(np.unique(mine).tolist()) == {0, 1, 2}, "my labels, not theirs"

    # Again, and this time reload theirs: the screen shows their labels, nothing new is saved.
    theirs2, their_labels = save_elsewhere(
        assignment, value=4, base=kept, box=(slice(10, 14), slice(3, 6), slice(2, 30))
    )
    paint(page, "1", y=0.6)
    wait_state(page, "conflict")
    page.click("#conflict-reload")
    wait_state(page, "saved")
    np.testing.assert_array_equal(drawing(page), their_labels)
    assert latest_revision(assignment).pk == theirs2.pk
    assert page.evaluate("window.mriannot.autosave.base") == theirs2.pk

    # The next edit is saved on top of theirs.
    paint(page, "2", y=0.4)
    wait_state(page, "saved")
    after = latest_revision(assignment)
    assert after.base_id == theirs2.pk
    np.testing.assert_array_equal(revision_labels(after), drawing(page))


def test_offline_edits_are_kept_and_sent(live_server, context, page, viewer_world, shot):
    world = viewer_world
    assignment = world["mine"][0]
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    page.keyboard.press("a")
    paint(page, "1", y=0.45)
    wait_state(page, "saved")
    online = latest_revision(assignment)

    context.set_offline(True)
    paint(page, "2", y=0.55)
    wait_state(page, "offline")
    shot(page, "offline")
    kept = page.evaluate(
        """(id) => window.mriannot.store.get(id).then((r) => r && {base: r.base, user: r.username, n: r.bytes.length})""",
        assignment.pk,
    )
    assert kept == {"base": online.pk, "user": "rater1", "n": kept["n"]} and kept["n"] > 0
    assert latest_revision(assignment).pk == online.pk, "nothing reached the server"

    context.set_offline(False)
    wait_state(page, "saved")
    sent = latest_revision(assignment)
    assert sent.base_id == online.pk
    np.testing.assert_array_equal(revision_labels(sent), drawing(page))
    assert page.evaluate("(id) => window.mriannot.store.get(id)", assignment.pk) is None

    # Offline again, and the tab is closed: the edits wait in the browser for the next visit.
    context.set_offline(True)
    paint(page, "3", y=0.6)
    wait_state(page, "offline")
    unsent = drawing(page)
    page.close()
    context.set_offline(False)
    page2 = context.new_page()
    open_assignment(page2, live_server.url, assignment.pk)
    assert page2.inner_text("#starting-point").startswith("your edits kept in this browser")
    wait_state(page2, "saved")
    restored = latest_revision(assignment)
    assert restored.base_id == sent.pk
    np.testing.assert_array_equal(revision_labels(restored), unsent)
    page2.close()


def test_submit_freezes_and_opens_the_next_scan(live_server, page, viewer_world, shot):
    world = viewer_world
    first, second = world["mine"]
    log_in(page, live_server.url, "rater1", world["password"])
    page.click(f"#worklist-body a[data-assignment='{first.pk}']")
    wait_ready(page)
    page.keyboard.press("a")
    paint(page, "1")
    wait_state(page, "saved")
    submitted = latest_revision(first)

    page.click("#submit")
    assert page.is_visible("#submit-dialog")
    shot(page, "submit-dialog")
    page.click("#submit-confirm")
    page.wait_for_url(f"**/annotate/{second.pk}/")
    wait_ready(page)
    first.refresh_from_db()
    assert first.status == AssignmentStatus.SUBMITTED and first.submitted_at is not None
    assert latest_revision(first).pk == submitted.pk
    assert page.inner_text("#starting-point") == "an empty label volume"

    # The submitted scan opens read-only, and the server refuses saves to it.
    open_assignment(page, live_server.url, first.pk)
    assert page.is_visible("#readonly-notice")
    wait_state(page, "submitted")
    assert page.is_disabled("#submit") and page.is_disabled("#tool-buttons [data-tool=brush]")
    page.keyboard.press("b")
    assert page.evaluate("window.mriannot.viewer.nv.opts.drawingEnabled") is False
    # A valid label map (the submitted one itself), on the right base: refused as frozen.
    answer = page.evaluate(
        """async ([id, revision]) => {
             const labels = await (await fetch(`/api/v1/revisions/${revision}/labels/`)).arrayBuffer();
             const r = await fetch(`/api/v1/assignments/${id}/revisions/?base_revision=${revision}`, {method: 'POST',
               headers: {'X-CSRFToken': document.cookie.match(/csrftoken=([^;]+)/)[1],
                         'Content-Type': 'application/octet-stream'},
               body: labels});
             return {status: r.status, body: await r.json()};
           }""",
        [first.pk, submitted.pk],
    )
    assert answer["status"] == 409
    assert answer["body"]["error"] == "submitted" and "submitted and frozen" in answer["body"]["detail"]
    shot(page, "read-only")

    # Submitting the last open scan leads back to the worklist.
    open_assignment(page, live_server.url, second.pk)
    page.keyboard.press("Control+Enter")
    page.click("#submit-confirm")  # nothing drawn: an empty label volume is saved and submitted
    page.wait_for_url("**/?done=1&project=*")
    page.wait_for_selector("#page-note:has-text('no open scan left')")
    second.refresh_from_db()
    assert second.status == AssignmentStatus.SUBMITTED
    assert not revision_labels(latest_revision(second)).any()


def test_blinding_other_raters_labels_are_never_requested(live_server, page, viewer_world):
    world = viewer_world
    mine, theirs = world["mine"][0], world["theirs"][0]
    assert mine.scan_id == theirs.scan_id, "both raters label the same scan"
    their_revision, _ = save_elsewhere(theirs, value=4, base=None)
    my_revision, my_labels = save_elsewhere(mine, value=1, base=None, box=(slice(1, 3), slice(1, 3), slice(1, 3)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    log_in(page, live_server.url, "rater1", world["password"])
    assert theirs.pk not in [
        int(a)
        for a in page.locator("#worklist-body tr[data-assignment]").evaluate_all(
            "(rows) => rows.map((r) => r.dataset.assignment)"
        )
    ]
    page.goto(f"{live_server.url}/annotate/{theirs.pk}/")
    page.wait_for_selector("body[data-ready=error]")
    assert "does not exist or is not yours" in page.inner_text("#page-error")

    open_assignment(page, live_server.url, mine.pk)
    np.testing.assert_array_equal(drawing(page), my_labels)
    label_requests = [url for url in requests if "/revisions/" in url]
    assert label_requests == [f"{live_server.url}/api/v1/revisions/{my_revision.pk}/labels/"]

    # And the server refuses if asked anyway.
    for path in (
        f"revisions/{their_revision.pk}/labels/",
        f"revisions/{their_revision.pk}/",
        f"assignments/{theirs.pk}/revisions/",
    ):
        status = page.evaluate("(path) => fetch(`/api/v1/${path}`).then((r) => r.status)", path)
        assert status == 404, path

    # A lead may open any assignment, but the viewer still loads no rater's labels.
    page.click("#logout")
    page.wait_for_url("**/login/")
    log_in(page, live_server.url, "lead", world["password"])
    requests.clear()
    open_assignment(page, live_server.url, theirs.pk)
    assert "rater2" in page.inner_text("#readonly-notice")
    assert not [url for url in requests if "/revisions/" in url]
    assert not drawing(page).any()


def test_starts_from_the_models_prelabel(live_server, page, viewer_world):
    """Without a revision, the viewer starts from the pre-label and saves it with source=prelabel.

    The pre-label endpoint is answered by the test (the model is not trained here): what is
    tested is the viewer's side of the contract, GET assignments/<id>/prelabel/, under the
    pre-label policy "applied" ("offered": tests/frontend/test_console_pages.py).
    """
    world = viewer_world
    assignment = world["mine"][1]
    type(assignment.scan.project).objects.filter(pk=assignment.scan.project_id).update(prelabel_policy="applied")
    scan = assignment.scan
    prelabel = np.zeros(tuple(scan.shape), np.uint8)
    prelabel[12:20, 20:30, 10:14] = 2
    prelabel[25:28, 5:9, 20:22] = 4
    body = factories.nifti_bytes(prelabel, np.asarray(scan.affine))
    page.route(
        f"**/api/v1/assignments/{assignment.pk}/prelabel/",
        lambda route: route.fulfill(
            status=200, body=body, headers={"Content-Type": "application/gzip", "X-Model-Version": "3"}
        ),
    )
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    assert page.inner_text("#starting-point").startswith("the model's pre-label (model version 3)")
    np.testing.assert_array_equal(drawing(page), prelabel)
    wait_state(page, "saved")
    first = latest_revision(assignment)
    assert first.number == 1 and first.source == "prelabel"
    np.testing.assert_array_equal(revision_labels(first), prelabel)

    page.keyboard.press("a")
    paint(page, "1")
    wait_state(page, "saved")
    edited = latest_revision(assignment)
    assert edited.source == "manual" and edited.base_id == first.pk


def test_leaving_for_the_worklist_saves_first(live_server, context, page, viewer_world):
    world = viewer_world
    assignment = world["mine"][0]
    context.add_init_script("window.localStorage.setItem('mriannot.autosaveDelayMs', '600000')")  # no autosave
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    page.keyboard.press("a")
    paint(page, "2")
    wait_state(page, "unsaved")
    shown = drawing(page)
    assert latest_revision(assignment) is None
    page.click("#worklist-link")
    page.wait_for_url(f"{live_server.url}/")
    np.testing.assert_array_equal(revision_labels(latest_revision(assignment)), shown)

"""A lead runs a project from the browser (headless Chromium): creates it, writes its label schema
and settings, adds its annotators and changes a role, reads its home page; annotators are refused
these pages; the viewer lets a rater choose where to start when pre-labels are offered."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import Client

from consensus import services as consensus_services
from consensus.models import ConsensusRun
from labeling import services
from labeling.models import AuditEvent, LabelClass, Membership, Project, Role
from tests import factories
from tests.frontend.helpers import drawing, latest_revision, log_in, open_assignment, revision_labels, wait_state
from tests.frontend.test_workflow import paint

pytestmark = pytest.mark.browser

SHAPE = (12, 10, 8)  # 2 mm voxels (factories.AFFINE): a tiny volume


@pytest.fixture
def console_world(transactional_db, local_queue):
    """The factories' world: a lead of "Test project" (so allowed to create projects), three
    raters who rate in it, an outsider and a site admin."""
    return factories.make_world(raters_per_scan=2, n_annotators=3)


@pytest.mark.django_db
@pytest.mark.parametrize("page_name", ["", "settings/", "people/"])
def test_the_lead_pages_answer_annotators_403_and_strangers_404(page_name, frontend_dist, settings):
    settings.MRIANNOT_FRONTEND_DIST = frontend_dist
    world = factories.make_world()
    url = f"/projects/{world.project.pk}/{page_name}"
    statuses = {}
    for user in (world.lead, world.site_admin, world.annotators[0], world.outsider, None):
        client = Client()
        if user is not None:
            client.force_login(user)
        response = client.get(url)
        statuses[user.username if user else "anonymous"] = response.status_code
        assert '<script type="module"' in response.content.decode()
    assert statuses == {"lead": 200, "siteadmin": 200, "rater1": 403, "outsider": 404, "anonymous": 200}
    assert Client().get("/projects/").status_code == 200


def wait_ready(page, state: str = "true") -> None:
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == state, page.inner_text("#page-error")


def result_says(page, element_id: str, text: str) -> str:
    page.wait_for_function(
        "([id, text]) => document.getElementById(id).textContent.includes(text)", arg=[element_id, text]
    )
    return page.inner_text(f"#{element_id}")


def test_a_lead_creates_a_project_writes_its_schema_adds_raters_and_reads_its_home(
    live_server, page, console_world, shot
):
    world = console_world
    base = live_server.url
    log_in(page, base, "lead", factories.PASSWORD)
    # A lead who rates nothing lands on their one project's home, not on an empty worklist.
    assert page.url == f"{base}/projects/{world.project.pk}/"
    assert page.get_attribute('#project-nav a[aria-current="page"]', "data-page") == "home"

    # --- the projects page: a new project -------------------------------------------------------
    page.goto(f"{base}/projects/")
    wait_ready(page)
    assert page.locator("#projects-body tr").count() == 1
    assert page.is_visible("#create-card")
    page.fill("#new-name", "Browser project")
    page.fill("#new-description", "Three labels, two raters")
    page.fill("#new-raters", "2")
    page.click("#create-button")
    page.wait_for_url("**/settings/?created=1")
    wait_ready(page)
    project = Project.objects.get(name="Browser project")
    assert page.url == f"{base}/projects/{project.pk}/settings/?created=1"
    assert Membership.objects.get(project=project, user=world.lead).role == Role.LEAD
    assert project.prelabel_policy == "offered"  # two raters: the raters choose

    # --- settings: three labels, then the project's form ------------------------------------------
    for name, colour in (("CSF", "#3366ff"), ("Grey matter", "#22aa55"), ("Lesion", "#ff5500")):
        page.fill("#label-name", name)
        page.fill("#label-color", colour)
        page.click("#label-add")
        result_says(page, "labels-result", f"Added “{name}”")
    assert page.locator("#labels-body tr").count() == 3
    assert list(LabelClass.objects.filter(project=project).values_list("value", "name", "color", "key")) == [
        (1, "CSF", "#3366ff", 1),
        (2, "Grey matter", "#22aa55", 2),
        (3, "Lesion", "#ff5500", 3),
    ]
    # The lesion takes key 1: CSF gets its key 3.
    lesion = page.locator('#labels-body tr[data-value="3"]')
    lesion.locator("select").select_option("1")
    lesion.locator("button", has_text="Save").click()
    result_says(page, "labels-result", "Saved “Lesion” (key)")
    assert dict(LabelClass.objects.filter(project=project).values_list("name", "key")) == {
        "CSF": 3,
        "Grey matter": 2,
        "Lesion": 1,
    }

    page.select_option("#f-prelabel", "applied")
    page.select_option("#f-strategy", "entropy_stratified")  # a lesion project: batches spread over lesion load
    page.fill("#f-min-dice", "")  # off
    page.fill("#f-ambiguity", "0.1")
    page.click("#project-save")
    saved = result_says(page, "project-result", "Saved")
    assert "prelabel_policy" in saved and "flag_min_label_dice" in saved and "al_strategy" in saved
    project.refresh_from_db()
    assert (project.prelabel_policy, project.flag_min_label_dice, project.ambiguity_threshold) == ("applied", None, 0.1)
    assert project.al_strategy == "entropy_stratified"
    event = AuditEvent.objects.filter(project=project, action="project.update").get()
    assert event.data["changed"] == ["al_strategy", "ambiguity_threshold", "flag_min_label_dice", "prelabel_policy"]
    shot(page, "settings")

    # --- people: three annotators, one role change ---------------------------------------------------
    page.click('#project-nav a[data-page="people"]')
    page.wait_for_url(f"{base}/projects/{project.pk}/people/")
    wait_ready(page)
    assert page.is_hidden("#user-card")  # accounts are made by site admins
    for username in ("rater1", "rater2", "rater3"):
        page.fill("#member-username", username)
        page.select_option("#member-role", "annotator")
        page.click("#member-add")
        result_says(page, "people-result", f"Added {username} as annotator.")
    assert page.locator("#members-body tr").count() == 4
    rater3 = page.locator('#members-body tr[data-username="rater3"]')
    rater3.locator("select").select_option("lead")
    rater3.locator("button", has_text="Change role").click()
    result_says(page, "people-result", "rater3 is now a lead.")
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {"lead": "lead", "rater1": "annotator", "rater2": "annotator", "rater3": "lead"}
    assert page.get_attribute('#members-body tr[data-username="rater3"]', "data-role") == "lead"
    shot(page, "people")

    # --- home: the counts ---------------------------------------------------------------------------
    truth = factories.label_array(SHAPE, values=(1, 2))
    scans = [
        services.scan_create(
            project=project,
            actor=world.lead,
            raw=factories.nifti_bytes(factories.image_array(SHAPE, seed), factories.AFFINE),
        )
        for seed in (1, 2)
    ]
    done = scans[0]
    factories.submit_panel(world, done, [truth, truth])
    consensus_services.consensus_run_execute(run_id=ConsensusRun.objects.get(scan=done).pk)

    page.click('#project-nav a[data-page="home"]')
    page.wait_for_url(f"{base}/projects/{project.pk}/")
    wait_ready(page)
    counts = {
        name: page.inner_text(f"#count-{name}")
        for name in ("scans", "labelled", "submitted", "flagged", "ground-truth")
    }
    assert counts == {"scans": "2", "labelled": "1", "submitted": "1", "flagged": "0", "ground-truth": "1"}
    assert page.evaluate("document.getElementById('progress-bar').value") == 0.5
    assert "1 of 2 scans have a ground truth" in page.inner_text("#progress-text")
    assert page.inner_text("#flagged-body") == "No scan waits for a lead."
    assert "No model yet" in page.inner_text("#model-text")
    links = page.eval_on_selector_all("#home-links a", "(as) => as.map((a) => a.getAttribute('href'))")
    assert links == [
        f"/projects/{project.pk}/scans/",
        f"/projects/{project.pk}/people/",
        f"/projects/{project.pk}/settings/",
        f"/dashboard/{project.pk}/",
        f"/exports/{project.pk}/",
    ]
    shot(page, "home")

    # --- people again: the server's per-rater figures, the open assignments, the scans to add a rater to
    page.click('#project-nav a[data-page="people"]')
    page.wait_for_url(f"{base}/projects/{project.pk}/people/")
    wait_ready(page)
    figures = page.eval_on_selector_all(
        "#raters-body tr",
        "(rows) => rows.map((r) => [r.dataset.rater, ...[...r.cells].slice(2, 5).map((c) => c.textContent)])",
    )
    assert figures == [["rater1", "1", "0", "1"], ["rater2", "1", "0", "1"]]  # to do, in progress, submitted
    open_rows = page.eval_on_selector_all("#open-body tr", "(rows) => rows.map((r) => r.dataset.annotator)")
    assert sorted(open_rows) == ["rater1", "rater2"]
    assert page.inner_text("#open-body").count("no other annotator free") == 2  # both annotators rate that scan
    options = page.eval_on_selector_all("#extra-scan option", "(os) => os.map((o) => o.textContent)")
    assert len(options) == 2 and all(o.endswith("2 rater(s)") for o in options), options

    # rater3 leads this project and rates in another: lands on the worklist, which links both.
    page.click("#logout")
    page.wait_for_url("**/login/")
    log_in(page, base, "rater3", factories.PASSWORD)
    assert page.url == f"{base}/"
    page.wait_for_selector("#projects-link", state="visible")


def test_annotators_are_refused_the_lead_pages(live_server, page, console_world):
    world = console_world
    base = live_server.url
    log_in(page, base, "rater1", factories.PASSWORD)
    assert page.url == f"{base}/"  # a rater lands on the worklist

    for path, page_name in (("", "Project home pages"), ("settings/", "Project settings"), ("people/", "People")):
        response = page.goto(f"{base}/projects/{world.project.pk}/{path}")
        assert response.status == 403
        wait_ready(page, "forbidden")
        assert page.is_visible("#forbidden")
        assert page_name in page.inner_text("#forbidden-text")
        assert page.locator("#project-nav").is_hidden()
    # The API refuses them as well.
    status = page.evaluate(
        """(id) => fetch(`/api/v1/projects/${id}/`, {method: 'PATCH', headers: {'Content-Type': 'application/json',
             'X-CSRFToken': document.cookie.match(/csrftoken=([^;]+)/)[1]}, body: JSON.stringify({name: 'Mine'})})
           .then((r) => r.status)""",
        world.project.pk,
    )
    assert status == 403
    assert Project.objects.get(pk=world.project.pk).name == "Test project"

    # The projects page lists their project as an annotator, with no "New project" form.
    page.goto(f"{base}/projects/")
    wait_ready(page)
    assert page.get_attribute("#projects-body tr", "data-role") == "annotator"
    assert page.is_hidden("#create-card") and page.is_visible("#create-note")


def _answer_with(body: bytes):
    """A route handler that answers a pre-label request with ``body`` from model version 2."""

    def handle(route, request) -> None:
        route.fulfill(status=200, body=body, headers={"Content-Type": "application/gzip", "X-Model-Version": "2"})

    return handle


def test_offered_prelabel_the_rater_chooses_to_start_from_the_model_or_blank(live_server, page, viewer_world):
    """Pre-label policy "offered" (two raters): the viewer starts empty and offers the model's drawing.

    The pre-label endpoint is answered by the test (no model is trained here)."""
    world = viewer_world
    assert world["project"].prelabel_policy == "offered"
    model_start, blank_start = world["mine"]
    prelabels = {}
    for assignment in (model_start, blank_start):
        labels = np.zeros(tuple(assignment.scan.shape), np.uint8)
        labels[12:20, 20:30, 10:14] = 2
        body = factories.nifti_bytes(labels, np.asarray(assignment.scan.affine))
        prelabels[assignment.pk] = labels
        page.route(f"**/api/v1/assignments/{assignment.pk}/prelabel/", _answer_with(body))
    log_in(page, live_server.url, "rater1", world["password"])

    open_assignment(page, live_server.url, model_start.pk)
    assert page.is_visible("#prelabel-offer") and "model version 2" in page.inner_text("#prelabel-offer")
    assert not drawing(page).any()  # nothing applied before the rater chooses
    page.click("#start-from-model")
    assert page.is_hidden("#prelabel-offer")
    np.testing.assert_array_equal(drawing(page), prelabels[model_start.pk])
    wait_state(page, "saved")
    first = latest_revision(model_start)
    assert first.number == 1 and first.source == "prelabel"
    np.testing.assert_array_equal(revision_labels(first), prelabels[model_start.pk])

    open_assignment(page, live_server.url, blank_start.pk)
    page.click("#start-blank")
    assert page.is_hidden("#prelabel-offer") and not drawing(page).any()
    page.keyboard.press("a")
    paint(page, "1")
    wait_state(page, "saved")
    first = latest_revision(blank_start)
    assert first.number == 1 and first.source == "manual"
    assert not (revision_labels(first) == 2).any()

"""The dashboard's active-learning card in headless Chromium, against the real server and a real
Celery worker: with no training ground truth the lead's request is refused with the server's
reason; with ground truths the lead asks for a model, follows its training and scoring, and sees
the version, its ground truths and validation Dice, and the new worklist order."""

from __future__ import annotations

import pytest

from active_learning.models import ModelVersion
from consensus import services as consensus_services
from consensus.models import ConsensusRun, GroundTruth
from labeling.models import Project, Scan, Split
from mriannot.jobs import JobStatus
from tests import factories
from tests.frontend.helpers import log_in
from tests.frontend.lead_helpers import SHAPE, purge_queues, rated_project, record_text

pytestmark = [pytest.mark.browser, pytest.mark.celery]

TINY_NETWORK = {"working_shape": (16, 16, 16), "channels": (4, 8), "strides": (2,), "num_res_units": 0}
TINY_TRAINING = {"steps": 20, "steps_per_scan": 0, "patch_shape": None}


@pytest.fixture
def al_world(transactional_db, local_queue, request, settings):
    """Three rated scans with consensus (not yet in a split), two open scans, a worker."""
    settings.MRIANNOT_AL_NETWORK = TINY_NETWORK
    settings.MRIANNOT_AL_TRAINING = TINY_TRAINING
    world = rated_project(n_raters=3, n_scans=3, drifting=None)
    Project.objects.filter(pk=world.project.pk).update(al_retrain_every=100)  # only when asked
    for seed in (7, 8):
        factories.add_scan(world, seed=seed, shape=SHAPE, subject_id=f"sub-open-{seed}")
    purge_queues(local_queue)  # tasks queued while building the world
    request.getfixturevalue("celery_worker")
    return world


def test_lead_trains_a_model_from_the_dashboard_and_follows_it(live_server, page, al_world, shot):
    world = al_world
    project = world.project
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    page.goto(f"{live_server.url}/dashboard/{project.pk}/")
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#page-error")
    assert page.is_visible("#al-card")
    assert page.inner_text("#models-body") == "No model yet: the worklists are in cold-start order."
    assert "2 open scans ranked" in page.inner_text("#al-open")

    # No ground truth in the training split yet: the server's reason, and nothing queued.
    page.click("#train-model")
    page.wait_for_selector("#train-error", state="visible")
    assert page.inner_text("#train-error").startswith("No model was queued: ")
    assert "ground trut" in page.inner_text("#train-error").lower()
    assert not ModelVersion.objects.exists() and page.is_enabled("#train-model")

    rated = ConsensusRun.objects.filter(scan__project=project).order_by("scan_id")
    for run, split in zip(rated, (Split.TRAIN, Split.TRAIN, Split.VALIDATION), strict=False):
        Scan.objects.filter(pk=run.scan_id).update(split=split)
        if not GroundTruth.objects.filter(scan_id=run.scan_id).exists():
            consensus_services.ground_truth_accept(run=run, actor=world.lead)
    record_text(page, "train-text")
    page.click("#train-model")
    page.wait_for_selector("#train-progress[data-status=done]", timeout=120_000)
    assert page.is_hidden("#train-error")
    version = ModelVersion.objects.get()
    assert version.status == JobStatus.DONE and version.scored_at is not None
    seen = page.evaluate("window.progressSeen")
    assert seen[-1] == "100 % · model v1 trained, open scans re-ranked", seen
    # The table and the note are reloaded once the job is over.
    page.wait_for_selector('#models-body tr[data-version="1"][data-status=done]')
    page.wait_for_function("document.getElementById('al-note').textContent.startsWith('Model v1')")
    row = page.locator('#models-body tr[data-version="1"]')
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells[:5] == ["v1", "done", "manual", "2", "1"], cells
    measured = [d for d in version.validation_dice.values() if d is not None]  # None: label absent
    assert measured and cells[5] == f"{sum(measured) / len(measured):.3f}"
    names = {str(c.value): c.name for c in project.label_classes.all()}
    assert cells[6] == " · ".join(
        f"{names[value]}: {'–' if dice is None else f'{dice:.3f}'}" for value, dice in version.validation_dice.items()
    )
    # The version's model card: a link to its Markdown, which lists the per-label validation Dice.
    assert cells[8] == "model card", cells
    href = row.locator("a.model-card-link").get_attribute("href")
    assert href == f"/api/v1/models/{version.pk}/card.md"
    card = page.request.get(f"{live_server.url}{href}")  # with the lead's session
    assert card.ok and card.headers["content-type"].startswith("text/markdown")
    for value, dice in version.validation_dice.items():
        assert f"| {names[value]} | {'–' if dice is None else f'{dice:.3f}'} |" in card.text()
    ranking = world.client(world.lead).get(f"/api/v1/projects/{project.pk}/ranking/").json()
    assert ranking["note"].startswith("Model v1") and page.inner_text("#al-note") == ranking["note"]
    # Validation Dice by scan metadata: the one validation scan, in the one group of each column.
    assert list(version.validation_dice_per_scan) == [str(rated[2].scan_id)]
    page.wait_for_selector("#model-breakdown-box:not([hidden]) #model-breakdown table")
    assert page.inner_text("#model-breakdown-title") == "Validation Dice of model v1 by scan metadata"
    site = page.locator('#model-breakdown table[data-column="site"] tbody tr')
    assert site.count() == 1 and site.first.locator("td").all_inner_texts()[:2] == ["not recorded", "1"]
    shot(page, "model-trained")
